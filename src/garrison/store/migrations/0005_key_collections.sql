-- The document collections a key may read ('*' = every collection); its clearance bounds the labels.
ALTER TABLE api_keys ADD COLUMN collections TEXT NOT NULL DEFAULT '*';
