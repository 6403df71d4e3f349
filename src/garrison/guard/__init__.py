"""Offline guardrails: PII and secret redaction, prompt-injection screening and egress by data class."""
