"""Engines behind a one-method protocol: embedded llama.cpp, ONNX embeddings, and plugins.

Importing this package sets one process default before llama.cpp can load: OpenMP threads that sleep
instead of spinning while they wait (`OMP_WAIT_POLICY=PASSIVE`). libgomp reads the policy once, when
llama.cpp's library is loaded, so it cannot be a setting read later. Spinning workers take a shared
machine's CPU from everything else (on 2 cores, one busy neighbour cut decode to a quarter); sleeping
ones kept it at par (benchmarks/results/cpu_paths.json, docs/engine.md). An operator's own
`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` wins.
"""

from garrison.engines._openmp import apply_wait_policy

apply_wait_policy()
