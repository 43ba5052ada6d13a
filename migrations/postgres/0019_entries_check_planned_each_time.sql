-- The check that a statement's entries name files (0016) ran one query
-- without parameters, so PL/pgSQL planned it once per connection and kept
-- the plan: made while a new ledger's files table was nearly empty, it was a
-- hash join over a scan of the whole table, and every later feed on that
-- connection scanned every file again (until an ANALYZE of files replanned
-- it). Run by EXECUTE it is planned at each statement, on the table as it is
-- then: a look-up in files' primary key per file id named.
CREATE OR REPLACE FUNCTION settlegate_entries_name_files() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    EXECUTE
        'SELECT n.id
         FROM (SELECT file_id AS id FROM changed_entries
               UNION SELECT reversed_by FROM changed_entries WHERE reversed_by IS NOT NULL) n
         WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.id = n.id)
         LIMIT 1'
        INTO missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'entries must name a file: there is no file %', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
