-- The same tables as PostgreSQL's (an SQLite ledger keeps no blobs): chunks
-- under a key of their own, named by the blob's row.
ALTER TABLE blob_chunks RENAME COLUMN checksum TO blob_key;
ALTER TABLE blobs ADD COLUMN blob_key TEXT NOT NULL DEFAULT '';
