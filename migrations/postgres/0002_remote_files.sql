-- Files taken from partners' SFTP servers, by what they were there. A file
-- left in place on the server (after_pickup = "leave") is not taken again
-- while its path, size and modification time stay the same.

CREATE TABLE remote_files (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner  TEXT        NOT NULL,
    endpoint TEXT        NOT NULL,
    path     TEXT        NOT NULL,
    size     BIGINT      NOT NULL,
    mtime    BIGINT      NOT NULL,
    file_id  BIGINT      NOT NULL REFERENCES files (id),
    taken_at TIMESTAMPTZ NOT NULL,
    UNIQUE (partner, endpoint, path, size, mtime)
);

CREATE TRIGGER remote_files_append_only BEFORE UPDATE OR DELETE ON remote_files
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
