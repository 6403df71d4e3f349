-- The document collections a console user may read ('*' = every collection), as an API key has them.
ALTER TABLE users ADD COLUMN collections TEXT NOT NULL DEFAULT '*';
