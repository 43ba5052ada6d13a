//! Watched folders: one inbox per partner (`<data-dir>/inbox/<partner>/` by
//! default). A file is taken only when complete — not a temporary name
//! (`.x`, `*.tmp`, `*.part`, `*.filepart`), its size and modification time
//! unchanged for the settle time, and for formats with a control file, only
//! once the control file is there too (both are taken together). It leaves
//! the inbox only after its bytes are in the store and its verdict in the
//! ledger; a receipt `<name>.verdict` goes to `<data-dir>/receipts/<partner>/`.
//!
//! `notify` events wake the scanner early; a periodic rescan is the safety
//! net (events are lost on overflow and on network file systems), and a
//! rescan at start takes what arrived while the gateway was down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::intake::{Arrival, Gateway, IntakeError, choose_format};

/// How long a failed file waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Settings of the watched-folder channel.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// A file must keep its size and mtime this long before it is taken.
    pub settle: Duration,
    /// Interval of the safety-net rescan.
    pub rescan: Duration,
}

/// One partner's inbox.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub partner: String,
    pub dir: PathBuf,
    pub receipts: PathBuf,
}

/// Names that are still being written under a temporary name.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        || [".tmp", ".part", ".filepart"]
            .iter()
            .any(|s| name.to_ascii_lowercase().ends_with(s))
}

/// What a listing says about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: SystemTime,
}

/// Remembers when each file was last seen to change; pure, so its timing is
/// tested with made-up instants.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: HashMap<String, (Stat, Instant)>,
}

impl Tracker {
    /// Record a listing taken at `now`; returns the names whose size and
    /// mtime have not changed for at least `settle`, sorted.
    pub fn observe(
        &mut self,
        listing: &[(String, Stat)],
        now: Instant,
        settle: Duration,
    ) -> Vec<String> {
        let mut next = HashMap::with_capacity(listing.len());
        let mut ready = Vec::new();
        for (name, stat) in listing {
            let since = match self.seen.get(name) {
                Some((prev, since)) if prev == stat => *since,
                _ => now,
            };
            if now.duration_since(since) >= settle {
                ready.push(name.clone());
            }
            next.insert(name.clone(), (*stat, since));
        }
        self.seen = next;
        ready.sort();
        ready
    }

    /// Whether some listed file is waiting to settle.
    pub fn pending(&self) -> bool {
        !self.seen.is_empty()
    }

    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("inbox {dir}: cannot list: {source}")]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Intake(#[from] IntakeError),
}

/// The regular files of an inbox that are not temporary.
fn list(dir: &Path) -> Result<Vec<(String, Stat)>, WatchError> {
    let err = |source| WatchError::List {
        dir: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(dir = %dir.display(), name = ?entry.file_name(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if is_temporary(&name) {
            continue;
        }
        // A file that vanished or cannot be statted is seen again next scan.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        out.push((
            name,
            Stat {
                size: meta.len(),
                mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            },
        ));
    }
    Ok(out)
}

/// Run one inbox until `shutdown` turns true. `wake` carries file-system
/// events (coalesced); the loop also rescans on its own.
pub async fn run_inbox(
    gw: Arc<Gateway>,
    inbox: Inbox,
    settings: WatchSettings,
    mut wake: mpsc::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tracker = Tracker::default();
    let mut retry_at: HashMap<String, Instant> = HashMap::new();
    let mut reported_list_error = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let listing = match list(&inbox.dir) {
            Ok(l) => {
                reported_list_error = false;
                l
            }
            Err(e) => {
                if !reported_list_error {
                    tracing::error!(partner = %inbox.partner, error = %e, "inbox unreadable; retrying");
                    reported_list_error = true;
                }
                let _ = std::fs::create_dir_all(&inbox.dir);
                Vec::new()
            }
        };
        let now = Instant::now();
        let ready = tracker.observe(&listing, now, settings.settle);
        for (data, sidecar) in complete_pairs(&gw, &inbox.partner, &ready) {
            if *shutdown.borrow() {
                break;
            }
            if retry_at.get(&data).is_some_and(|t| *t > now) {
                continue;
            }
            match take(&gw, &inbox, &data, sidecar.as_deref()).await {
                Ok(()) => {
                    retry_at.remove(&data);
                    tracker.forget(&data);
                    if let Some(s) = &sidecar {
                        tracker.forget(s);
                    }
                }
                Err(e) => {
                    tracing::error!(partner = %inbox.partner, file = %inbox.dir.join(&data).display(), error = %e, "could not take file; it stays in the inbox and is retried");
                    retry_at.insert(data, now + RETRY_AFTER);
                }
            }
        }
        let wait = if tracker.pending() {
            (settings.settle / 4).clamp(Duration::from_millis(50), settings.rescan)
        } else {
            settings.rescan
        };
        tokio::select! {
            _ = wake.recv() => {
                // Coalesce a burst of events into one scan.
                while wake.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(partner = %inbox.partner, "inbox stopped");
}

/// Pair ready data files with their control files. Control files are never
/// taken alone; a data file whose format needs one waits until it is ready.
fn complete_pairs(gw: &Gateway, partner: &str, ready: &[String]) -> Vec<(String, Option<String>)> {
    let Some(p) = gw.config.partner(partner) else {
        return Vec::new();
    };
    let suffixes: Vec<String> = p
        .formats
        .iter()
        .filter_map(|f| gw.formats.get(f))
        .filter_map(|s| s.sidecar.as_ref().map(|c| c.suffix.to_ascii_lowercase()))
        .collect();
    let mut out = Vec::new();
    for name in ready {
        if suffixes
            .iter()
            .any(|s| name.to_ascii_lowercase().ends_with(s.as_str()))
        {
            continue;
        }
        let sidecar = choose_format(&gw.formats, p, name)
            .ok()
            .and_then(|spec| spec.sidecar_name(name));
        match sidecar {
            Some(s) if ready.contains(&s) => out.push((name.clone(), Some(s))),
            // The control file has not arrived or not settled yet: wait.
            Some(_) => {}
            None => out.push((name.clone(), None)),
        }
    }
    out
}

/// Take one file: intake (stage + record + judge), receipt, then remove it
/// from the inbox — in that order, so a crash at any point loses nothing.
async fn take(
    gw: &Gateway,
    inbox: &Inbox,
    name: &str,
    sidecar: Option<&str>,
) -> Result<(), WatchError> {
    let path = inbox.dir.join(name);
    let sidecar_path = sidecar.map(|s| inbox.dir.join(s));
    let arrival = Arrival {
        partner: inbox.partner.clone(),
        channel: "watch".into(),
        source_path: Some(path.display().to_string()),
        name: name.to_string(),
        actor: crate::intake::gateway_actor(),
        ..Arrival::default()
    };
    let out = gw
        .intake_file(&arrival, &path, sidecar_path.as_deref())
        .await?;
    let receipt =
        super::receipt::write(&inbox.receipts, name, &out).map_err(|source| WatchError::Io {
            path: inbox.receipts.join(format!("{name}.verdict")),
            source,
        })?;
    for p in std::iter::once(&path).chain(sidecar_path.as_ref()) {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WatchError::Io {
                    path: p.clone(),
                    source,
                });
            }
        }
    }
    if let Ok(d) = std::fs::File::open(&inbox.dir) {
        let _ = d.sync_all();
    }
    tracing::info!(
        partner = %inbox.partner, file_id = out.file_id, name, verdict = %out.verdict,
        reason = %out.reason, receipt = %receipt.display(), "taken from inbox"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names() {
        for n in [
            ".CSTL.dat",
            "x.tmp",
            "x.part",
            "X.PART",
            "x.dat.filepart",
            ".ctl",
        ] {
            assert!(is_temporary(n), "{n}");
        }
        for n in [
            "CSTL_031_20261121_0001.dat",
            "PGSTL_PG01_20261121_01.ctl",
            "part",
            "tmp.dat",
        ] {
            assert!(!is_temporary(n), "{n}");
        }
    }

    fn stat(size: u64, secs: u64) -> Stat {
        Stat {
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_file_is_ready_once_unchanged_for_the_settle_time() {
        let settle = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut t = Tracker::default();
        let l = |size, secs| vec![("a.dat".to_string(), stat(size, secs))];
        assert!(t.observe(&l(10, 1), t0, settle).is_empty());
        // Growing: the clock restarts.
        assert!(
            t.observe(&l(20, 2), t0 + Duration::from_secs(1), settle)
                .is_empty()
        );
        assert!(
            t.observe(&l(20, 2), t0 + Duration::from_millis(2900), settle)
                .is_empty()
        );
        assert_eq!(
            t.observe(&l(20, 2), t0 + Duration::from_secs(3), settle),
            vec!["a.dat"]
        );
        // Touched (same size, new mtime): not ready again until settled.
        assert!(
            t.observe(&l(20, 9), t0 + Duration::from_secs(4), settle)
                .is_empty()
        );
        // Gone: forgotten.
        assert!(
            t.observe(&[], t0 + Duration::from_secs(5), settle)
                .is_empty()
        );
        assert!(!t.pending());
    }
}
