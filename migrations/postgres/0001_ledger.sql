-- settlegate ledger (PostgreSQL). The SQLite migration of the same number
-- creates the same tables, constraints and triggers.

CREATE TABLE files (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner          TEXT        NOT NULL,
    channel          TEXT        NOT NULL,
    endpoint         TEXT,
    source_path      TEXT,
    name             TEXT        NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL,
    size             BIGINT      NOT NULL,
    checksum         TEXT        NOT NULL,
    sidecar_checksum TEXT,
    format           TEXT,
    fingerprint      TEXT,
    business_key     TEXT,
    business_date    DATE,
    records          BIGINT,
    totals           TEXT,
    drill_signals    TEXT,
    verdict          TEXT        NOT NULL DEFAULT 'received'
        CHECK (verdict IN ('received', 'fed', 'duplicate', 'drill', 'conflict',
                           'overlap', 'invalid', 'superseded', 'rejected')),
    reason           TEXT,
    error            TEXT,
    related_file_id  BIGINT REFERENCES files (id),
    decided_at       TIMESTAMPTZ
);

CREATE UNIQUE INDEX files_fed_checksum     ON files (checksum)             WHERE verdict = 'fed';
CREATE UNIQUE INDEX files_fed_fingerprint  ON files (fingerprint)          WHERE verdict = 'fed';
CREATE UNIQUE INDEX files_fed_business_key ON files (format, business_key) WHERE verdict = 'fed';

-- (checksum, id): "the earliest earlier arrival with these bytes" is one index probe.
CREATE INDEX files_checksum      ON files (checksum, id);
CREATE INDEX files_fingerprint   ON files (fingerprint);
CREATE INDEX files_business_key  ON files (format, business_key);
CREATE INDEX files_business_date ON files (business_date);
CREATE INDEX files_partner       ON files (partner, received_at);

CREATE TABLE entries (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id       BIGINT  NOT NULL REFERENCES files (id),
    partner       TEXT    NOT NULL,
    format        TEXT    NOT NULL,
    business_date DATE    NOT NULL,
    record_no     BIGINT  NOT NULL,
    record_key    TEXT    NOT NULL,
    amount        NUMERIC NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('original', 'reversal')),
    reversed_by   BIGINT REFERENCES files (id),
    fields        TEXT    NOT NULL
);

CREATE UNIQUE INDEX entries_fed_record_key ON entries (partner, format, record_key)
    WHERE kind = 'original' AND reversed_by IS NULL;
CREATE INDEX entries_file          ON entries (file_id);
CREATE INDEX entries_business_date ON entries (business_date);

CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    file_id  BIGINT REFERENCES files (id),
    kind     TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT,
    details  TEXT
);
CREATE INDEX events_file ON events (file_id);

CREATE FUNCTION settlegate_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_TABLE_NAME;
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
CREATE TRIGGER files_no_delete BEFORE DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();

CREATE FUNCTION settlegate_entries_only_reverse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.reversed_by IS NOT NULL OR NEW.reversed_by IS NULL
       OR (NEW.id, NEW.file_id, NEW.partner, NEW.format, NEW.business_date, NEW.record_no,
           NEW.record_key, NEW.amount, NEW.kind, NEW.fields)
          IS DISTINCT FROM
          (OLD.id, OLD.file_id, OLD.partner, OLD.format, OLD.business_date, OLD.record_no,
           OLD.record_key, OLD.amount, OLD.kind, OLD.fields) THEN
        RAISE EXCEPTION 'entries are append-only (only reversed_by may be set, once)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER entries_only_reverse BEFORE UPDATE ON entries
    FOR EACH ROW EXECUTE FUNCTION settlegate_entries_only_reverse();
