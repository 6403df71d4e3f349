-- The shared catalogue of indexed documents: every gateway on this store reads and writes the same one.
-- Each gateway's search index (its own documents.db: chunks, FTS5 keywords, vectors) is a local cache
-- derived from the storage roots and reconciled against this table (by `version`), so a label or a
-- removal made on any gateway is honoured by every other from its next search.
CREATE TABLE document_catalogue (
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
    removed INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    UNIQUE (collection, path)
);

CREATE INDEX document_catalogue_version ON document_catalogue (version);

-- Documents an operator removed while their file stays in the root: no gateway's sync adds them back.
CREATE TABLE document_exclusions (
    collection TEXT NOT NULL,
    path TEXT NOT NULL,
    excluded_at TEXT NOT NULL,
    PRIMARY KEY (collection, path)
);

-- Bumped by every change to the catalogue; each row carries the version that last changed it.
CREATE TABLE document_catalogue_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);

INSERT INTO document_catalogue_state (id, version) VALUES (1, 0);
