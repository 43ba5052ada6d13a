-- The content store kept in the ledger's database (`store = "postgres"`,
-- PostgreSQL only); the tables exist here so both ledgers share one schema.
CREATE TABLE blobs (
    checksum TEXT    PRIMARY KEY,
    size     INTEGER NOT NULL,
    chunks   INTEGER NOT NULL
);

CREATE TABLE blob_chunks (
    checksum TEXT    NOT NULL,
    n        INTEGER NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (checksum, n)
);
