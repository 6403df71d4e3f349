"""Engines behind a one-method protocol: embedded llama.cpp, ONNX embeddings, and plugins."""
