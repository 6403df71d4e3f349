-- API keys: metadata only. Secrets live in api_key_secrets as HMAC-SHA256 digests, never in clear.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    env TEXT NOT NULL,
    scopes TEXT NOT NULL,
    models TEXT NOT NULL,
    clearance TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    daily_tokens BIGINT,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    rotated_at TEXT
);

CREATE INDEX api_keys_env ON api_keys (env);

-- One row per secret of a key; a rotated-out secret keeps working until its expires_at (grace).
CREATE TABLE api_key_secrets (
    digest TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES api_keys (id),
    created_at TEXT NOT NULL,
    expires_at TEXT
);

CREATE INDEX api_key_secrets_key ON api_key_secrets (key_id);

-- Token usage per key, model and UTC day.
CREATE TABLE usage_daily (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day, model)
);

-- The hash-chained audit log: one record per request, allowed or denied.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    key_name TEXT,
    env TEXT NOT NULL,
    client TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    decision TEXT NOT NULL,
    reason TEXT,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    content_mode TEXT NOT NULL,
    prompt TEXT,
    response TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT
);

CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_key ON audit_log (key_id, ts);
