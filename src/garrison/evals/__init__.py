"""`garrison eval`: prompt suites with verifiable checks, run against OpenAI-compatible targets."""
