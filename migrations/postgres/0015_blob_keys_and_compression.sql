-- A blob streamed into the store is written before its checksum is known
-- (hashed on the way, not read twice): its chunks go under a key of their
-- own, which the blob's row names once it is whole. Blobs stored so far are
-- keyed by their checksum.
ALTER TABLE blob_chunks RENAME COLUMN checksum TO blob_key;
ALTER TABLE blobs ADD COLUMN blob_key TEXT;
ALTER TABLE blobs DISABLE TRIGGER blobs_append_only;
UPDATE blobs SET blob_key = checksum;
ALTER TABLE blobs ENABLE TRIGGER blobs_append_only;
ALTER TABLE blobs ALTER COLUMN blob_key SET NOT NULL;
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
