-- The guardrail policy a key is bound to (NULL: the environment's default policy).
ALTER TABLE api_keys ADD COLUMN policy TEXT;
