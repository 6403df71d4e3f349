-- One row per indexed document. `id` is HMAC-SHA256(server secret, collection NUL path): stable across edits,
-- and it reveals nothing about the path to someone without the secret.
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    label TEXT NOT NULL,
    label_rank INTEGER NOT NULL,
    label_source TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    pages INTEGER,
    chunks INTEGER NOT NULL,
    ingested_at TEXT NOT NULL,
    UNIQUE (collection, path)
);

-- Chunks carry their document's collection and label rank, so every search filters on them in the query.
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    label_rank INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    heading TEXT,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL
);

CREATE INDEX chunks_document ON chunks (document_id);
CREATE INDEX chunks_access ON chunks (collection, label_rank);

-- Keywords: FTS5 over the chunks table (external content, kept in step by the triggers below).
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    title, heading, text, content = 'chunks', content_rowid = 'id', tokenize = 'porter unicode61'
);

-- Every change to chunks bumps the generation, so each process's in-memory vector matrix knows to refresh.
CREATE TABLE index_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);

INSERT INTO index_state (id, generation) VALUES (1, 0);

CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, title, heading, text) VALUES (new.id, new.title, new.heading, new.text);
    UPDATE index_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, heading, text)
    VALUES ('delete', old.id, old.title, old.heading, old.text);
    UPDATE index_state SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER chunks_au AFTER UPDATE OF collection, label_rank ON chunks BEGIN
    UPDATE index_state SET generation = generation + 1 WHERE id = 1;
END;

-- Documents an operator removed while their file stays in the root: sync leaves them out.
CREATE TABLE exclusions (
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    excluded_at TEXT NOT NULL,
    PRIMARY KEY (collection, path)
);
