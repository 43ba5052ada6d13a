-- A file claimed from a watched inbox carries the claim's identity (the
-- claiming process and its claim number): one arrival per claim, whatever
-- is killed when. A claim found again after a crash is finished from the
-- row recorded for it, never recorded a second time.
ALTER TABLE files ADD COLUMN claim TEXT;
CREATE UNIQUE INDEX files_claim ON files (claim) WHERE claim IS NOT NULL;
