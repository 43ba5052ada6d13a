-- Outbound delivery: one row per file settlegate sends a partner. A payout
-- file delivered twice pays twice, so the database allows one live delivery
-- per partner and checksum; only an operator's resend (a new row naming the
-- first) sends the same bytes again.
CREATE TABLE deliveries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner             TEXT        NOT NULL,
    -- The partner's endpoint it is uploaded to; NULL: the partner collects
    -- it from /outbox on settlegate's SFTP server.
    endpoint            TEXT,
    name                TEXT        NOT NULL,
    -- outbox, send or resend
    source              TEXT        NOT NULL,
    source_path         TEXT,
    size                BIGINT      NOT NULL,
    checksum            TEXT        NOT NULL,
    control_name        TEXT,
    control_checksum    TEXT,
    format              TEXT,
    fingerprint         TEXT,
    -- The business key when a format applies: a partner's file of the same
    -- key (e.g. a bank's transfer results) acknowledges the delivery.
    business_key        TEXT,
    state               TEXT        NOT NULL
        CHECK (state IN ('queued', 'sending', 'delivered', 'collected', 'failed', 'invalid', 'duplicate')),
    -- How far the attempt in progress got (checked, uploaded, renamed): a
    -- delivery found `sending` after a crash is resolved from it and what
    -- the partner's side holds.
    progress            TEXT,
    -- The process making the attempt, and when it last said it is alive:
    -- only an attempt whose process stopped saying so is resolved by another.
    attempt_owner       TEXT,
    heartbeat_at        TIMESTAMPTZ,
    attempts            BIGINT      NOT NULL DEFAULT 0,
    error               TEXT,
    remote_path         TEXT,
    -- A resend: the delivery it sends again. A duplicate: the live one.
    related_delivery_id BIGINT REFERENCES deliveries (id),
    reason              TEXT,
    claim               TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    delivered_at        TIMESTAMPTZ,
    collected_by        TEXT,
    collected_from      TEXT,
    acknowledged_at     TIMESTAMPTZ,
    ack_file_id         BIGINT REFERENCES files (id)
);

-- The promise: one live delivery per partner and bytes (resends aside) …
CREATE UNIQUE INDEX deliveries_live_checksum ON deliveries (partner, checksum)
    WHERE state NOT IN ('invalid', 'duplicate') AND related_delivery_id IS NULL;
-- … one resend of a delivery in flight at a time …
CREATE UNIQUE INDEX deliveries_pending_resend ON deliveries (related_delivery_id)
    WHERE state IN ('queued', 'sending') AND related_delivery_id IS NOT NULL;
-- … and one delivery per outbox claim, whatever is killed when.
CREATE UNIQUE INDEX deliveries_claim ON deliveries (claim) WHERE claim IS NOT NULL;
CREATE INDEX deliveries_state ON deliveries (state, partner);
CREATE INDEX deliveries_partner_name ON deliveries (partner, name);
CREATE INDEX deliveries_created ON deliveries (created_at);
CREATE INDEX deliveries_business_key ON deliveries (partner, format, business_key);

CREATE TRIGGER deliveries_no_delete BEFORE DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION settlegate_refuse();

-- Audit events about a delivery (the same append-only log as files').
ALTER TABLE events ADD COLUMN delivery_id BIGINT REFERENCES deliveries (id);
CREATE INDEX events_delivery ON events (delivery_id);
