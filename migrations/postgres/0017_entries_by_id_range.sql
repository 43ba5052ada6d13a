-- A file's entries are found by the range of ids its feed took, on the
-- primary key, instead of by an index on file_id that every fed entry had to
-- enter (1.4 s of a 30 s `COPY` of 1.3 M entries). Ids only grow, so the
-- entries one transaction inserts lie between the sequence values it takes
-- before and after; another node's feed may take ids inside that range, so
-- look-ups still match file_id. The reversals that offset a superseded file
-- carry its id but are inserted by the superseding feed: their range is kept
-- apart. No range: no entries.
ALTER TABLE files ADD COLUMN entries_from   BIGINT;
ALTER TABLE files ADD COLUMN entries_to     BIGINT;
ALTER TABLE files ADD COLUMN reversals_from BIGINT;
ALTER TABLE files ADD COLUMN reversals_to   BIGINT;

UPDATE files SET entries_from = s.lo, entries_to = s.hi
    FROM (SELECT file_id, MIN(id) AS lo, MAX(id) AS hi FROM entries
          WHERE kind = 'original' GROUP BY file_id) s
    WHERE files.id = s.file_id;
UPDATE files SET reversals_from = s.lo, reversals_to = s.hi
    FROM (SELECT file_id, MIN(id) AS lo, MAX(id) AS hi FROM entries
          WHERE kind = 'reversal' GROUP BY file_id) s
    WHERE files.id = s.file_id;

DROP INDEX entries_file;

-- A range, once set, is where the file's entries are: it never moves.
CREATE FUNCTION settlegate_files_keep_entry_ranges() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.entries_from IS NOT NULL AND (NEW.entries_from, NEW.entries_to) IS DISTINCT FROM (OLD.entries_from, OLD.entries_to))
       OR (OLD.reversals_from IS NOT NULL AND (NEW.reversals_from, NEW.reversals_to) IS DISTINCT FROM (OLD.reversals_from, OLD.reversals_to)) THEN
        RAISE EXCEPTION 'a file''s entry ranges never change once set';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER files_keep_entry_ranges
    BEFORE UPDATE OF entries_from, entries_to, reversals_from, reversals_to ON files
    FOR EACH ROW EXECUTE FUNCTION settlegate_files_keep_entry_ranges();
