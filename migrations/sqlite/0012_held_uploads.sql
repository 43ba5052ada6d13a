-- The first half of a data file / control file pair pushed to the SFTP
-- server, held until its other half arrives, on any node: its bytes are in
-- the content store, its name here. The node that gets the second half
-- deletes the row in the transaction that decides, and takes the pair.
CREATE TABLE held_uploads (
    partner  TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    checksum TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    held_at  TEXT    NOT NULL,
    PRIMARY KEY (partner, name)
);
