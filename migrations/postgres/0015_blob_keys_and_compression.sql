-- A blob streamed into the store is written before its checksum is known
-- (hashed on the way, not read twice): its chunks go under a key of their
-- own (in `blob_chunks.checksum`), which the blob's row names in `blob_key`
-- once it is whole. A row without one (stored before this version) has its
-- chunks under its checksum. Additive: older nodes keep running.
ALTER TABLE blobs ADD COLUMN blob_key TEXT;
CREATE UNIQUE INDEX blobs_blob_key ON blobs (blob_key);

-- Settlement files are text and compress several times over: chunks are
-- kept lz4-compressed (lossless; checked against the checksum on every
-- read), which cuts what the store writes to the table and the WAL. Chunks
-- already stored stay as they are; a server built without lz4 keeps them
-- uncompressed.
DO $$
BEGIN
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTENDED;
    ALTER TABLE blob_chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
END
$$;
