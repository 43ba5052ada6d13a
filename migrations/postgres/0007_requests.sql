-- Four-eyes: an override an operator asks for waits here until a second
-- operator approves or denies it. A request is never changed or deleted;
-- its decision is a row of request_decisions, at most one per request
-- (the primary key), so two approvers racing carry it out at most once.
CREATE TABLE requests (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      TEXT NOT NULL
        CHECK (action IN ('release', 'supersede', 'reject', 'redeliver', 'resend')),
    file_id     BIGINT REFERENCES files (id),
    delivery_id BIGINT REFERENCES deliveries (id),
    operator    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    CHECK ((file_id IS NULL) <> (delivery_id IS NULL))
);
CREATE INDEX requests_created ON requests (created_at);

CREATE TABLE request_decisions (
    request_id  BIGINT PRIMARY KEY REFERENCES requests (id),
    -- approved (carried out: done or failed) or denied
    decision    TEXT NOT NULL CHECK (decision IN ('approved', 'denied')),
    operator    TEXT NOT NULL,
    reason      TEXT,
    at          TIMESTAMPTZ NOT NULL,
    -- For an approval: done, or failed with why; set once, after the action.
    outcome     TEXT CHECK (outcome IN ('done', 'failed')),
    outcome_message TEXT
);

CREATE TRIGGER requests_append_only BEFORE UPDATE OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
CREATE TRIGGER request_decisions_no_delete BEFORE DELETE ON request_decisions
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();
CREATE FUNCTION settlegate_decision_outcome_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.outcome IS NOT NULL OR NEW.outcome IS NULL
       OR (NEW.request_id, NEW.decision, NEW.operator, NEW.reason, NEW.at)
          IS DISTINCT FROM (OLD.request_id, OLD.decision, OLD.operator, OLD.reason, OLD.at) THEN
        RAISE EXCEPTION 'request decisions are append-only (only the outcome may be set, once)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER request_decisions_outcome_once BEFORE UPDATE ON request_decisions
    FOR EACH ROW EXECUTE FUNCTION settlegate_decision_outcome_once();

ALTER TABLE events ADD COLUMN request_id BIGINT REFERENCES requests (id);
