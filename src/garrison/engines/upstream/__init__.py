"""Engines for models served elsewhere: OpenAI-compatible servers and Ollama, routed over replicas."""
