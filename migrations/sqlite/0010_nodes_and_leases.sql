-- Several gateway processes share one ledger. Each says it is alive in
-- `nodes` (its heartbeat), and scheduled work (the pickup of one endpoint,
-- the uploads to one endpoint) runs under a lease: one holder at a time,
-- until `expires_ms` unless renewed. Times are the database's clock in
-- milliseconds since 1970, so the nodes' own clocks never decide. Each
-- change of holder raises `generation`: a write fenced by a lease names its
-- generation, and fails once another node holds the lease.
CREATE TABLE nodes (
    node         TEXT   PRIMARY KEY,
    host         TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

CREATE TABLE leases (
    name        TEXT   PRIMARY KEY,
    holder      TEXT   NOT NULL,
    generation  BIGINT NOT NULL,
    acquired_ms BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
