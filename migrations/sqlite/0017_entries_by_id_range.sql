-- A file's entries are found by the range of ids its feed took, on the
-- rowid, instead of by an index on file_id that every fed entry had to enter.
-- Ids only grow (rows are never deleted), so the entries one transaction
-- inserts lie between the largest id before it and the largest after.
-- Look-ups still match file_id. The reversals that offset a superseded file
-- carry its id but are inserted by the superseding feed: their range is kept
-- apart. No range: no entries.
ALTER TABLE files ADD COLUMN entries_from   INTEGER;
ALTER TABLE files ADD COLUMN entries_to     INTEGER;
ALTER TABLE files ADD COLUMN reversals_from INTEGER;
ALTER TABLE files ADD COLUMN reversals_to   INTEGER;

UPDATE files SET
    entries_from   = (SELECT MIN(id) FROM entries WHERE file_id = files.id AND kind = 'original'),
    entries_to     = (SELECT MAX(id) FROM entries WHERE file_id = files.id AND kind = 'original'),
    reversals_from = (SELECT MIN(id) FROM entries WHERE file_id = files.id AND kind = 'reversal'),
    reversals_to   = (SELECT MAX(id) FROM entries WHERE file_id = files.id AND kind = 'reversal');

DROP INDEX entries_file;

-- A range, once set, is where the file's entries are: it never moves.
CREATE TRIGGER files_keep_entry_ranges
BEFORE UPDATE OF entries_from, entries_to, reversals_from, reversals_to ON files
WHEN (OLD.entries_from IS NOT NULL
      AND (NEW.entries_from IS NOT OLD.entries_from OR NEW.entries_to IS NOT OLD.entries_to))
  OR (OLD.reversals_from IS NOT NULL
      AND (NEW.reversals_from IS NOT OLD.reversals_from OR NEW.reversals_to IS NOT OLD.reversals_to))
BEGIN SELECT RAISE(ABORT, 'a file''s entry ranges never change once set'); END;
