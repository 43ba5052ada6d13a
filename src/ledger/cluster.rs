//! Several gateway processes on one ledger: each node's heartbeat, and the
//! leases under which scheduled work runs on one node at a time. Every
//! time is the database's clock (milliseconds since 1970), so a node whose
//! clock is off cannot keep a lease it lost.

use super::{Backend, Ledger, LedgerError, on_pool, query_error};

/// The database's "now" in milliseconds, per dialect.
macro_rules! now_ms {
    (pg) => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
    (sqlite) => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}

/// The same statement for both dialects, `NOW` standing for the
/// database's clock.
macro_rules! both {
    (@pg $($part:tt)*) => { concat!($(both!(@one pg $part)),*) };
    (@sqlite $($part:tt)*) => { concat!($(both!(@one sqlite $part)),*) };
    (@one $d:ident NOW) => { now_ms!($d) };
    (@one $d:ident { $m:ident }) => { $m!() };
    (@one $d:ident $s:literal) => { $s };
    ($($part:tt)*) => {
        (
            both!(@pg $($part)*),
            both!(@sqlite $($part)*),
        )
    };
}

/// `Ok(true)` while `fence` holds, checked on `executor` (inside the
/// transaction of the write it fences); `sql` is [`Ledger::fence_sql`].
macro_rules! check_fence {
    ($executor:expr, $sql:expr, $fence:expr) => {{
        let row: Option<i64> = sqlx::query_scalar($sql)
            .bind(&$fence.lease)
            .bind(&$fence.holder)
            .bind($fence.generation)
            .fetch_optional($executor)
            .await
            .map_err($crate::ledger::query_error("check lease"))?;
        Ok::<bool, LedgerError>(row.is_some())
    }};
}
pub(super) use {both, check_fence, now_ms};

/// A node (a `serve` process) as the ledger last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    /// The process's owner name (host, pid, start).
    pub node: String,
    pub host: String,
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
}

/// Who holds a lease, until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub generation: i64,
    pub acquired_ms: i64,
    pub expires_ms: i64,
}

/// A lease held: the write it fences fails once another node holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub generation: i64,
}

impl Ledger {
    pub(super) fn pick(&self, (pg, sqlite): (&'static str, &'static str)) -> &'static str {
        match self.backend() {
            Backend::Postgres => pg,
            Backend::Sqlite => sqlite,
        }
    }

    /// Say that `node` is alive (first call: it started).
    pub async fn node_heartbeat(
        &self,
        node: &str,
        host: &str,
        version: &str,
    ) -> Result<(), LedgerError> {
        let sql = self.pick(both!(
            "INSERT INTO nodes (node, host, version, started_ms, heartbeat_ms) VALUES ($1, $2, $3, "
            NOW ", " NOW ") ON CONFLICT (node) DO UPDATE SET heartbeat_ms = " NOW
        ));
        on_pool!(self, pool => sqlx::query(sql)
            .bind(node)
            .bind(host)
            .bind(version)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(query_error("node heartbeat"))
    }

    /// A node that stops says so: its row goes.
    pub async fn node_gone(&self, node: &str) -> Result<(), LedgerError> {
        on_pool!(self, pool => sqlx::query("DELETE FROM nodes WHERE node = $1")
            .bind(node)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(query_error("remove node"))
    }

    /// Nodes heard of within `within_ms`, and the database's now.
    pub async fn live_nodes(&self, within_ms: i64) -> Result<(Vec<NodeRow>, i64), LedgerError> {
        let sql = self.pick(both!(
            "SELECT node, host, version, started_ms, heartbeat_ms FROM nodes WHERE heartbeat_ms > "
            NOW " - $1 ORDER BY host, started_ms"
        ));
        let now_sql = self.pick(both!("SELECT " NOW));
        on_pool!(self, pool => {
            let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(sql)
                .bind(within_ms)
                .fetch_all(pool)
                .await
                .map_err(query_error("list nodes"))?;
            let now: i64 = sqlx::query_scalar(now_sql)
                .fetch_one(pool)
                .await
                .map_err(query_error("read the database clock"))?;
            Ok((
                rows.into_iter()
                    .map(|(node, host, version, started_ms, heartbeat_ms)| NodeRow {
                        node,
                        host,
                        version,
                        started_ms,
                        heartbeat_ms,
                    })
                    .collect(),
                now,
            ))
        })
    }

    /// Leases held now (not expired).
    pub async fn held_leases(&self) -> Result<Vec<LeaseRow>, LedgerError> {
        let sql = self.pick(both!(
            "SELECT name, holder, generation, acquired_ms, expires_ms FROM leases WHERE expires_ms > "
            NOW " ORDER BY name"
        ));
        let rows: Vec<(String, String, i64, i64, i64)> = on_pool!(self, pool => sqlx::query_as(sql)
            .fetch_all(pool)
            .await)
        .map_err(query_error("list leases"))?;
        Ok(rows
            .into_iter()
            .map(
                |(name, holder, generation, acquired_ms, expires_ms)| LeaseRow {
                    name,
                    holder,
                    generation,
                    acquired_ms,
                    expires_ms,
                },
            )
            .collect())
    }

    /// Take `name` for `holder` for `ttl_ms` if nobody holds it (or its
    /// holder let it expire). Returns the fence, `None` when another node
    /// holds it. Taken from another holder, the generation rises.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Fence>, LedgerError> {
        let sql = self.pick(both!(
            "INSERT INTO leases (name, holder, generation, acquired_ms, expires_ms) VALUES ($1, $2, 1, "
            NOW ", " NOW " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             generation = leases.generation + 1, acquired_ms = excluded.acquired_ms, \
             expires_ms = excluded.expires_ms WHERE leases.expires_ms <= "
            NOW " RETURNING generation"
        ));
        let generation: Option<i64> = on_pool!(self, pool => sqlx::query_scalar(sql)
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(pool)
            .await)
        .map_err(query_error("acquire lease"))?;
        Ok(generation.map(|generation| Fence {
            lease: name.to_string(),
            holder: holder.to_string(),
            generation,
        }))
    }

    /// Extend a lease still held; `false` when it expired or another node
    /// holds it now (then it is lost: the holder stops).
    pub async fn renew_lease(&self, fence: &Fence, ttl_ms: i64) -> Result<bool, LedgerError> {
        let sql = self.pick(both!(
            "UPDATE leases SET expires_ms = " NOW " + $4 WHERE name = $1 AND holder = $2 \
             AND generation = $3 AND expires_ms > " NOW
        ));
        let n = on_pool!(self, pool => sqlx::query(sql)
            .bind(&fence.lease)
            .bind(&fence.holder)
            .bind(fence.generation)
            .bind(ttl_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(query_error("renew lease"))?;
        Ok(n == 1)
    }

    /// Give a lease up (a node stopping): another node may take it at once.
    /// `remove`: the row goes (a claim on one file, never wanted again);
    /// otherwise it stays, expired, and its generation keeps counting.
    pub async fn release_lease(&self, fence: &Fence, remove: bool) -> Result<(), LedgerError> {
        let sql = if remove {
            "DELETE FROM leases WHERE name = $1 AND holder = $2 AND generation = $3"
        } else {
            "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND generation = $3"
        };
        on_pool!(self, pool => sqlx::query(sql)
        .bind(&fence.lease)
        .bind(&fence.holder)
        .bind(fence.generation)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(query_error("release lease"))
    }

    /// Whether the fence still holds, said by the database.
    pub async fn lease_held(&self, fence: &Fence) -> Result<bool, LedgerError> {
        let sql = self.fence_sql();
        on_pool!(self, pool => check_fence!(pool, sql, fence))
    }

    /// The statement that checks a fence: on PostgreSQL it locks the lease
    /// row `FOR SHARE` until the transaction ends, so no other node takes
    /// the lease before a write it fences commits (a takeover waits, then
    /// finds the expiry renewed or waits for it).
    pub(super) fn fence_sql(&self) -> &'static str {
        self.pick((
            concat!(
                "SELECT generation FROM leases WHERE name = $1 AND holder = $2 AND generation = $3 AND expires_ms > ",
                now_ms!(pg),
                " FOR SHARE"
            ),
            concat!(
                "SELECT generation FROM leases WHERE name = $1 AND holder = $2 AND generation = $3 AND expires_ms > ",
                now_ms!(sqlite)
            ),
        ))
    }
}
