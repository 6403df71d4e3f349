-- Peer tokens a central tier has accepted, while they could still be replayed (they live at most 60 s):
-- every gateway on a shared store refuses a token id another one took. Expired rows are pruned as it goes.
CREATE TABLE federation_tokens (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);

CREATE INDEX federation_tokens_expiry ON federation_tokens (expires_at);
