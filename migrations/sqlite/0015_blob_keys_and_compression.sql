-- The same tables as PostgreSQL's (an SQLite ledger keeps no blobs): the key
-- a blob's chunks are stored under, when it is not its checksum.
ALTER TABLE blobs ADD COLUMN blob_key TEXT;
