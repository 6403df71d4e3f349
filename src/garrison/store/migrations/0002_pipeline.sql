-- Audit records as typed events: request.admitted / request.finished pairs (a crash leaves an admitted
-- record without its finish), the client's own x-request-id, the error code of a failed request, and
-- JSON details stages annotate (guard verdicts, document ids). NULL in records written before this.
ALTER TABLE audit_log ADD COLUMN event TEXT;
ALTER TABLE audit_log ADD COLUMN client_request_id TEXT;
ALTER TABLE audit_log ADD COLUMN error_code TEXT;
ALTER TABLE audit_log ADD COLUMN details TEXT;

CREATE INDEX audit_log_request ON audit_log (request_id);

-- Token reservations of admitted requests still running, in any process sharing this store; a
-- reservation is replaced by its usage row in the transaction that records the request's end.
CREATE TABLE quota_reservations (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,
    tokens BIGINT NOT NULL,
    expires_at REAL NOT NULL
);

CREATE INDEX quota_reservations_key ON quota_reservations (key_id, day);

-- Token buckets (rpm, tpm) per key, shared by every process on this store.
CREATE TABLE quota_buckets (
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    level REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (key_id, kind)
);
