-- Files taken from partners' SFTP servers, by what they were there. A file
-- left in place on the server (after_pickup = "leave") is not taken again
-- while its path, size and modification time stay the same.

CREATE TABLE remote_files (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    partner  TEXT    NOT NULL,
    endpoint TEXT    NOT NULL,
    path     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    mtime    INTEGER NOT NULL,
    file_id  INTEGER NOT NULL REFERENCES files (id),
    taken_at TEXT    NOT NULL,
    UNIQUE (partner, endpoint, path, size, mtime)
);

CREATE TRIGGER remote_files_no_update BEFORE UPDATE ON remote_files
BEGIN SELECT RAISE(ABORT, 'remote_files are append-only'); END;
CREATE TRIGGER remote_files_no_delete BEFORE DELETE ON remote_files
BEGIN SELECT RAISE(ABORT, 'remote_files are append-only'); END;
