"""The Ollama-compatible surface: schemas, pure translators, and thin routers."""
