-- The version of the shared catalogue (in the store) this local index was last reconciled with.
ALTER TABLE index_state ADD COLUMN catalogue_version INTEGER NOT NULL DEFAULT 0;
