"""The OpenAI-compatible surface: schemas, pure translators, and thin routers."""
