//! Several `serve` processes (nodes) on one ledger. Each node says it is
//! alive in the ledger; scheduled work (an endpoint's pickup, its uploads)
//! and the judging of a recorded file run under a lease in the ledger, so
//! one node at a time does each. A lease lasts `lease_seconds` unless its
//! holder renews it (every third of that); a node that dies loses its
//! leases when they expire, and another node takes them. The database's
//! clock and its row decide, never a lock or a clock in this process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::ledger::{Fence, Ledger, LedgerError};

/// This node in the `nodes` table: its owner name (host, pid, start).
pub fn node_name() -> &'static str {
    crate::intake::process_owner()
}

/// The host this node runs on, as the audit log names it.
pub fn host_name() -> String {
    crate::intake::gateway_actor()
        .trim_start_matches("settlegate@")
        .to_string()
}

/// A lease this node wants: held (and renewed in the background) once
/// [`Lease::hold`] got it, until it is lost or released.
#[derive(Clone)]
pub struct Lease {
    name: String,
    ledger: Ledger,
    ttl: Duration,
    state: Arc<Mutex<Option<Held>>>,
    /// A claim on one piece of work (a file to judge): logged quietly and
    /// removed when released.
    claim: bool,
}

struct Held {
    fence: Fence,
    /// Past this instant (the last successful renewal's start plus the
    /// lease time) the lease may be someone else's, whatever the database
    /// said last.
    valid_until: Instant,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease {
    pub fn new(ledger: &Ledger, name: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            name: name.into(),
            ledger: ledger.clone(),
            ttl,
            state: Arc::default(),
            claim: false,
        }
    }

    /// A lease on one piece of work, held while it is done.
    pub fn claim(ledger: &Ledger, name: impl Into<String>, ttl: Duration) -> Lease {
        Lease {
            claim: true,
            ..Lease::new(ledger, name, ttl)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(30_000)
    }

    /// The fence while the lease is held by this node (by its own clock:
    /// renewed less than a lease time ago).
    pub fn fence(&self) -> Option<Fence> {
        let state = self.state.lock().ok()?;
        let held = state.as_ref()?;
        (Instant::now() < held.valid_until).then(|| held.fence.clone())
    }

    /// Hold the lease: `Some` when this node holds it (already, or taken
    /// now because nobody else does), `None` when another node does.
    pub async fn hold(&self) -> Result<Option<Fence>, LedgerError> {
        if let Some(f) = self.fence() {
            return Ok(Some(f));
        }
        self.forget("expired before it could be renewed");
        let started = Instant::now();
        let Some(fence) = self
            .ledger
            .acquire_lease(&self.name, crate::cluster::node_name(), self.ttl_ms())
            .await?
        else {
            return Ok(None);
        };
        if self.claim {
            tracing::debug!(claim = %self.name, "claimed");
        } else {
            tracing::info!(lease = %self.name, generation = fence.generation, "lease gained");
        }
        let keeper = tokio::spawn(keep(self.clone(), fence.clone()));
        if let Ok(mut s) = self.state.lock() {
            *s = Some(Held {
                fence: fence.clone(),
                valid_until: started + self.ttl,
                keeper,
            });
        }
        Ok(Some(fence))
    }

    /// [`Lease::hold`] for a claim on one piece of work: the guard lets
    /// the claim go when dropped, also when the work is cancelled midway,
    /// so it is never renewed past its work.
    pub async fn hold_claim(self) -> Result<Option<Claimed>, LedgerError> {
        Ok(self.hold().await?.map(|_| Claimed { lease: self }))
    }

    /// Whether the database says this node still holds the lease (checked
    /// before an action outside the ledger, such as archiving a remote file).
    pub async fn still_held(&self) -> bool {
        let Some(fence) = self.fence() else {
            return false;
        };
        match self.ledger.lease_held(&fence).await {
            Ok(true) => true,
            Ok(false) => {
                self.forget("held by another node now");
                false
            }
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot check the lease; acting as if lost");
                false
            }
        }
    }

    /// Give the lease up (stopping): another node may take it at once.
    pub async fn release(&self) {
        let held = self.state.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = held {
            h.keeper.abort();
            if let Err(e) = self.ledger.release_lease(&h.fence, self.claim).await {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the lease; it expires by itself");
            } else if !self.claim {
                tracing::info!(lease = %self.name, "lease released");
            }
        }
    }

    /// Drop what this node believed it held, saying so once.
    fn forget(&self, why: &str) {
        let held = self.state.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = held {
            h.keeper.abort();
            tracing::warn!(lease = %self.name, generation = h.fence.generation, why, "lease lost");
        }
    }
}

/// A claim held by this node ([`Lease::hold_claim`]).
pub struct Claimed {
    lease: Lease,
}

impl Claimed {
    /// Give the claim up once its work is done.
    pub async fn release(self) {
        self.lease.release().await;
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        // Released already, or its work was cancelled: stop renewing it at
        // once and give it up in the background (if that cannot run, it
        // expires after the lease time).
        let held = self.lease.state.lock().ok().and_then(|mut s| s.take());
        if let Some(h) = held {
            h.keeper.abort();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let ledger = self.lease.ledger.clone();
                rt.spawn(async move {
                    if let Err(e) = ledger.release_lease(&h.fence, true).await {
                        tracing::warn!(claim = %h.fence.lease, error = %e, "cannot release a claim; it expires by itself");
                    }
                });
            }
        }
    }
}

/// Renew `fence` every third of the lease time while it is this node's.
async fn keep(lease: Lease, fence: Fence) {
    let every = lease.ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        let started = Instant::now();
        match lease.ledger.renew_lease(&fence, lease.ttl_ms()).await {
            Ok(true) => {
                if let Ok(mut s) = lease.state.lock()
                    && let Some(h) = s.as_mut()
                    && h.fence == fence
                {
                    h.valid_until = started + lease.ttl;
                }
            }
            Ok(false) => {
                let held = lease.state.lock().ok().and_then(|mut s| {
                    if s.as_ref().is_some_and(|h| h.fence == fence) {
                        s.take()
                    } else {
                        None
                    }
                });
                if held.is_some() {
                    tracing::warn!(lease = %lease.name, generation = fence.generation, "lease lost: another node holds it now");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %lease.name, error = %e, "cannot renew the lease; retrying");
            }
        }
    }
}

/// Say in the ledger that this node is alive, every third of the lease
/// time, until `stop`; then remove its row.
pub async fn heartbeat(
    ledger: Ledger,
    ttl: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let host = host_name();
    let version = env!("CARGO_PKG_VERSION");
    loop {
        if let Err(e) = ledger.node_heartbeat(node_name(), &host, version).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Err(e) = ledger.node_gone(node_name()).await {
        tracing::warn!(error = %e, "cannot remove this node from the ledger");
    }
}

/// Completes once `stop` turns true (holding no borrow of it).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
