-- A feed inserts its entries by multi-row INSERT OR FAIL: a refused row stops
-- the statement and the feed's transaction rolls back whole, so no statement
-- needs to undo itself alone. An immediate foreign key still makes SQLite keep
-- a statement journal for every multi-row insert (it checks the key once the
-- statement ends, and would have to undo it); past 64 KiB that journal goes to
-- a temporary file, page by page. Checked at commit instead, the keys hold the
-- same promise: a transaction whose entries name no file does not commit.
-- SQLite cannot alter a constraint in place, so the table is rebuilt with its
-- rows, ids, indexes and triggers unchanged.
CREATE TABLE entries_rebuilt (
    id            INTEGER PRIMARY KEY,
    file_id       INTEGER NOT NULL REFERENCES files (id) DEFERRABLE INITIALLY DEFERRED,
    partner       TEXT    NOT NULL,
    format        TEXT    NOT NULL,
    business_date TEXT    NOT NULL,
    record_no     INTEGER NOT NULL,
    record_key    TEXT    NOT NULL,
    amount        TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('original', 'reversal')),
    -- For an original: the file whose supersede reversed it.
    reversed_by   INTEGER REFERENCES files (id) DEFERRABLE INITIALLY DEFERRED,
    fields        TEXT    NOT NULL
);
INSERT INTO entries_rebuilt (id, file_id, partner, format, business_date, record_no, record_key, amount, kind, reversed_by, fields)
    SELECT id, file_id, partner, format, business_date, record_no, record_key, amount, kind, reversed_by, fields
    FROM entries ORDER BY id;
DROP TABLE entries;
ALTER TABLE entries_rebuilt RENAME TO entries;

-- A record is fed at most once: one live original per record key.
CREATE UNIQUE INDEX entries_fed_record_key ON entries (partner, format, record_key)
    WHERE kind = 'original' AND reversed_by IS NULL;
CREATE INDEX entries_business_date ON entries (business_date);

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
