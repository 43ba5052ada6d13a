-- settlegate ledger (SQLite). The PostgreSQL migration of the same number
-- creates the same tables, constraints and triggers.

-- One row per arrival, whatever its verdict.
CREATE TABLE files (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    partner          TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    endpoint         TEXT,
    source_path      TEXT,
    name             TEXT    NOT NULL,
    received_at      TEXT    NOT NULL,
    size             INTEGER NOT NULL,
    checksum         TEXT    NOT NULL,
    sidecar_checksum TEXT,
    format           TEXT,
    fingerprint      TEXT,
    business_key     TEXT,
    business_date    TEXT,
    records          INTEGER,
    totals           TEXT,
    drill_signals    TEXT,
    verdict          TEXT    NOT NULL DEFAULT 'received'
        CHECK (verdict IN ('received', 'fed', 'duplicate', 'drill', 'conflict',
                           'overlap', 'invalid', 'superseded', 'rejected')),
    reason           TEXT,
    error            TEXT,
    related_file_id  INTEGER REFERENCES files (id),
    decided_at       TEXT
);

-- The promise, enforced by the database: at most one fed file per checksum,
-- per fingerprint and per business key, whichever process feeds.
CREATE UNIQUE INDEX files_fed_checksum     ON files (checksum)               WHERE verdict = 'fed';
CREATE UNIQUE INDEX files_fed_fingerprint  ON files (fingerprint)            WHERE verdict = 'fed';
CREATE UNIQUE INDEX files_fed_business_key ON files (format, business_key)   WHERE verdict = 'fed';

-- (checksum, id): "the earliest earlier arrival with these bytes" is one index probe.
CREATE INDEX files_checksum      ON files (checksum, id);
CREATE INDEX files_fingerprint   ON files (fingerprint);
CREATE INDEX files_business_key  ON files (format, business_key);
CREATE INDEX files_business_date ON files (business_date);
CREATE INDEX files_partner       ON files (partner, received_at);

-- Settlement intake: one row per fed record; reversals offset superseded ones.
-- Amounts are exact decimal text (SQLite has no exact decimal type).
-- No AUTOINCREMENT: rows are never deleted, so rowids only grow anyway.
CREATE TABLE entries (
    id            INTEGER PRIMARY KEY,
    file_id       INTEGER NOT NULL REFERENCES files (id),
    partner       TEXT    NOT NULL,
    format        TEXT    NOT NULL,
    business_date TEXT    NOT NULL,
    record_no     INTEGER NOT NULL,
    record_key    TEXT    NOT NULL,
    amount        TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('original', 'reversal')),
    -- For an original: the file whose supersede reversed it.
    reversed_by   INTEGER REFERENCES files (id),
    fields        TEXT    NOT NULL
);

-- A record is fed at most once: one live original per record key.
CREATE UNIQUE INDEX entries_fed_record_key ON entries (partner, format, record_key)
    WHERE kind = 'original' AND reversed_by IS NULL;
CREATE INDEX entries_file          ON entries (file_id);
CREATE INDEX entries_business_date ON entries (business_date);

-- Append-only audit log of everything the gateway and its operators did.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT    NOT NULL,
    file_id  INTEGER REFERENCES files (id),
    kind     TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    reason   TEXT,
    details  TEXT
);
CREATE INDEX events_file ON events (file_id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- Entries are never deleted; the only change is marking an original reversed, once.
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'entries are append-only'); END;
CREATE TRIGGER entries_only_reverse BEFORE UPDATE ON entries
WHEN OLD.reversed_by IS NOT NULL OR NEW.reversed_by IS NULL
  OR NEW.id IS NOT OLD.id OR NEW.file_id IS NOT OLD.file_id OR NEW.amount IS NOT OLD.amount
  OR NEW.record_key IS NOT OLD.record_key OR NEW.kind IS NOT OLD.kind
  OR NEW.partner IS NOT OLD.partner OR NEW.format IS NOT OLD.format
  OR NEW.business_date IS NOT OLD.business_date OR NEW.fields IS NOT OLD.fields
  OR NEW.record_no IS NOT OLD.record_no
BEGIN SELECT RAISE(ABORT, 'entries are append-only (only reversed_by may be set, once)'); END;

-- Files are never deleted: their bytes and verdicts are the record of what arrived.
CREATE TRIGGER files_no_delete BEFORE DELETE ON files
BEGIN SELECT RAISE(ABORT, 'files are never deleted'); END;
