"""Engines behind a one-method protocol: embedded llama.cpp, ONNX embeddings, and plugins.

llama.cpp's OpenMP workers keep libgomp's default wait policy (spin, then sleep): spinning barriers are
what makes two threads beat one on a quiet machine, and the engine's per-step thread choice
(`engines/threads.py`) drops to one thread, which has no barrier, when a neighbour takes a core. An
operator's own `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` applies as set.
"""
