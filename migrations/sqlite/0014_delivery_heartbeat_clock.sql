-- An upload attempt says it is alive on the database's clock (milliseconds
-- since 1970), as leases do: an attempt is taken over as stale only when the
-- database says it has been silent for a lease time, whatever the nodes'
-- own clocks say. `heartbeat_at` stays for people reading the row.
ALTER TABLE deliveries ADD COLUMN heartbeat_ms BIGINT;
