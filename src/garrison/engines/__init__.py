"""Engines behind a one-method protocol: embedded llama.cpp, ONNX embeddings, and plugins.

llama.cpp's OpenMP threads keep libgomp's own wait policy (spin, then sleep), as in llama.cpp's own server:
spinning is what makes two threads fast on a quiet machine, and `contention.py` drops to fewer threads
(one on 2 cores: no barrier to spin at) while other processes use the CPUs. An operator's
`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` applies as usual.
"""
