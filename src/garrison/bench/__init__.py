"""`garrison bench`: load generator, metrics and reports for any OpenAI- or Ollama-compatible server."""
