-- Console users: local (Argon2id password hash) or single sign-on (issuer + subject), with the same
-- environment, scopes, models, clearance and limits as an API key, and a role (admin | user).
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    env TEXT NOT NULL,
    display_name TEXT,
    source TEXT NOT NULL,
    subject TEXT,
    password_hash TEXT,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    models TEXT NOT NULL,
    clearance TEXT NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    daily_tokens BIGINT,
    created_at TEXT NOT NULL,
    password_changed_at TEXT,
    last_login_at TEXT,
    disabled_at TEXT
);

CREATE UNIQUE INDEX users_env_username ON users (env, username);
CREATE UNIQUE INDEX users_env_subject ON users (env, subject) WHERE subject IS NOT NULL;

-- Personal API keys name the user who made them (NULL: a key made by an operator).
ALTER TABLE api_keys ADD COLUMN user_id TEXT REFERENCES users (id);

-- Console sessions: only a digest of the session id is stored; sign-out revokes the row.
CREATE TABLE console_sessions (
    digest TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    client TEXT
);

CREATE INDEX console_sessions_user ON console_sessions (user_id);

-- Console conversations, kept per user until the user deletes them.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX conversations_user ON conversations (user_id, updated_at);

CREATE TABLE conversation_messages (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    citations TEXT,
    label TEXT,
    request_id TEXT,
    created_at TEXT NOT NULL
);

CREATE INDEX conversation_messages_conv ON conversation_messages (conversation_id, id);
