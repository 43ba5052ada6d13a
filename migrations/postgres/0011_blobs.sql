-- The content store kept in the ledger's database (`store = "postgres"`):
-- a blob is its chunks of at most 1 MiB, in order, and exists once its
-- `blobs` row does (written in the same transaction as the chunks, last).
-- Nodes then share no file system, and one backup holds ledger and bytes.
CREATE TABLE blobs (
    checksum TEXT   PRIMARY KEY,
    size     BIGINT NOT NULL,
    chunks   INTEGER NOT NULL
);

CREATE TABLE blob_chunks (
    checksum TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    data     BYTEA   NOT NULL,
    PRIMARY KEY (checksum, n)
);
-- Settlement files are stored as they are: no compression on the way in.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TRIGGER blobs_append_only BEFORE UPDATE OR DELETE ON blobs
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
CREATE TRIGGER blob_chunks_append_only BEFORE UPDATE OR DELETE ON blob_chunks
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
