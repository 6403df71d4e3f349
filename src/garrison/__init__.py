"""garrison: a self-hosted LLM platform that serves, guards and measures local models."""

__version__ = "0.1.0"
