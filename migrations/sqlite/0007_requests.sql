-- Four-eyes: an override an operator asks for waits here until a second
-- operator approves or denies it. A request is never changed or deleted;
-- its decision is a row of request_decisions, at most one per request
-- (the primary key), so two approvers racing carry it out at most once.
CREATE TABLE requests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT NOT NULL
        CHECK (action IN ('release', 'supersede', 'reject', 'redeliver', 'resend')),
    file_id     INTEGER REFERENCES files (id),
    delivery_id INTEGER REFERENCES deliveries (id),
    operator    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    CHECK ((file_id IS NULL) <> (delivery_id IS NULL))
);
CREATE INDEX requests_created ON requests (created_at);

CREATE TABLE request_decisions (
    request_id  INTEGER PRIMARY KEY REFERENCES requests (id),
    -- approved (carried out: done or failed) or denied
    decision    TEXT NOT NULL CHECK (decision IN ('approved', 'denied')),
    operator    TEXT NOT NULL,
    reason      TEXT,
    at          TEXT NOT NULL,
    -- For an approval: done, or failed with why; set once, after the action.
    outcome     TEXT CHECK (outcome IN ('done', 'failed')),
    outcome_message TEXT
);

CREATE TRIGGER requests_no_update BEFORE UPDATE ON requests
BEGIN SELECT RAISE(ABORT, 'requests are append-only'); END;
CREATE TRIGGER requests_no_delete BEFORE DELETE ON requests
BEGIN SELECT RAISE(ABORT, 'requests are append-only'); END;
CREATE TRIGGER request_decisions_no_delete BEFORE DELETE ON request_decisions
BEGIN SELECT RAISE(ABORT, 'request decisions are append-only'); END;
-- The only change: the outcome of an approval, once.
CREATE TRIGGER request_decisions_outcome_once BEFORE UPDATE ON request_decisions
WHEN OLD.outcome IS NOT NULL OR NEW.outcome IS NULL
  OR NEW.request_id IS NOT OLD.request_id OR NEW.decision IS NOT OLD.decision
  OR NEW.operator IS NOT OLD.operator OR NEW.reason IS NOT OLD.reason OR NEW.at IS NOT OLD.at
BEGIN SELECT RAISE(ABORT, 'request decisions are append-only (only the outcome may be set, once)'); END;

ALTER TABLE events ADD COLUMN request_id INTEGER REFERENCES requests (id);
