-- The operator console. Sessions live in the ledger, not in a process, so
-- any gateway process sharing it answers a logged-in browser. Only a hash of
-- the session token is kept: a copy of the ledger logs no one in.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    login      TEXT        NOT NULL,
    role       TEXT        NOT NULL CHECK (role IN ('viewer', 'operator')),
    -- Every state-changing form carries it; a request without it changes nothing.
    csrf_token TEXT        NOT NULL,
    address    TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);

-- What a fed file paid (the sum of its entries' amounts, exact) and how many
-- entries: the chart of the last 30 business days reads one row per fed
-- file instead of every entry. Set in the feed's transaction.
ALTER TABLE files ADD COLUMN fed_amount NUMERIC;
ALTER TABLE files ADD COLUMN fed_entries BIGINT;
UPDATE files SET fed_amount = s.amount, fed_entries = s.n
    FROM (SELECT file_id, SUM(amount) AS amount, COUNT(*) AS n FROM entries
          WHERE kind = 'original' GROUP BY file_id) s
    WHERE files.id = s.file_id AND files.verdict IN ('fed', 'superseded');

-- The console's lists, newest first, a page at a time (keyset on id).
CREATE INDEX files_quarantine_id ON files (id)
    WHERE verdict IN ('drill', 'conflict', 'overlap', 'invalid');
-- Covering: the chart reads a month of fed files from the index alone.
CREATE INDEX files_fed_date ON files (business_date) INCLUDE (id, partner, format, fed_amount)
    WHERE verdict = 'fed';
-- Last pickup per endpoint.
CREATE INDEX files_endpoint ON files (partner, endpoint, received_at) WHERE endpoint IS NOT NULL;
