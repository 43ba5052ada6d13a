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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::intake::{Arrival, Bytes, Gateway, IntakeError, Outcome, ReceiptStatus, gateway_actor};
use crate::model::Channel;

mod config;
pub use config::WatchSettings;

/// After this long without its control file, a waiting data file is reported.
const CONTROL_FILE_WARNING: Duration = Duration::from_secs(600);

/// How long a failed file waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

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

/// Claimed files wait here (inside the inbox, so a rename is atomic) while
/// they are taken: a new file dropped under the same name can never be
/// mistaken for, or deleted with, the one in hand.
pub const CLAIMED: &str = ".taking";

/// A claimed file on its way through intake.
#[derive(Debug, Default)]
struct Claim {
    sidecar: Option<String>,
    /// Set once its arrival is recorded: a retry judges that row instead of
    /// recording the file again.
    file_id: Option<i64>,
    /// Set once judged: a retry only writes the receipt and cleans up.
    outcome: Option<Outcome>,
    retry_at: Option<Instant>,
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
    let claimed_dir = inbox.dir.join(CLAIMED);
    let mut tracker = Tracker::default();
    // Files a previous run claimed but did not finish come first.
    let mut claims: BTreeMap<String, Claim> = leftover_claims(&gw, &inbox);
    let mut reported_list_error = false;
    let mut waiting_since: HashMap<String, (Instant, bool)> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let dir = inbox.dir.clone();
        let listing = match blocking(move || list(&dir)).await {
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
        let (pairs, waiting) = complete_pairs(&gw, &inbox.partner, &ready);
        // A data file whose control file does not come is not complete and is
        // not taken; say so once, so an operator can chase the partner.
        waiting_since.retain(|name, _| waiting.contains(name));
        for name in waiting {
            let (since, warned) = waiting_since.entry(name.clone()).or_insert((now, false));
            if !*warned && now.duration_since(*since) >= CONTROL_FILE_WARNING {
                *warned = true;
                tracing::warn!(partner = %inbox.partner, file = %inbox.dir.join(&name).display(), "still waiting for this file's control file; it is not taken without it");
            }
        }
        for (data, sidecar) in pairs {
            // A file of the same name still in hand: the new one waits.
            if claims.contains_key(&data) {
                continue;
            }
            let (from, to, d, sc) = (
                inbox.dir.clone(),
                claimed_dir.clone(),
                data.clone(),
                sidecar.clone(),
            );
            match blocking(move || claim(&from, &to, &d, sc.as_deref())).await {
                Ok(()) => {
                    tracker.forget(&data);
                    if let Some(s) = &sidecar {
                        tracker.forget(s);
                    }
                    claims.insert(
                        data,
                        Claim {
                            sidecar,
                            ..Claim::default()
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(partner = %inbox.partner, file = %inbox.dir.join(&data).display(), error = %e, "could not claim file; it stays in the inbox and is retried")
                }
            }
        }
        let names: Vec<String> = claims.keys().cloned().collect();
        for name in names {
            if *shutdown.borrow() {
                break;
            }
            let Some(c) = claims.get_mut(&name) else {
                continue;
            };
            if c.retry_at.is_some_and(|t| t > Instant::now()) {
                continue;
            }
            match take(&gw, &inbox, &claimed_dir, &name, c).await {
                Ok(()) => {
                    claims.remove(&name);
                }
                Err(e) => {
                    tracing::error!(partner = %inbox.partner, file = %claimed_dir.join(&name).display(), error = %e, "could not take file; it is kept and retried");
                    c.retry_at = Some(Instant::now() + RETRY_AFTER);
                }
            }
        }
        if claims.is_empty() {
            // Leave the inbox empty when idle (fails harmlessly if another
            // process sharing the inbox has a claim in it).
            let _ = std::fs::remove_dir(&claimed_dir);
        }
        let wait = if tracker.pending() || !claims.is_empty() {
            (settings.settle / 4)
                .max(Duration::from_millis(50))
                .min(settings.rescan)
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

/// Files left in the claimed directory by a run that stopped mid-way.
fn leftover_claims(gw: &Gateway, inbox: &Inbox) -> BTreeMap<String, Claim> {
    let dir = inbox.dir.join(CLAIMED);
    let listing = match list(&dir) {
        Ok(l) => l,
        Err(_) => return BTreeMap::new(),
    };
    let names: Vec<String> = listing.into_iter().map(|(n, _)| n).collect();
    let (pairs, _) = complete_pairs(gw, &inbox.partner, &names);
    if !pairs.is_empty() {
        tracing::warn!(partner = %inbox.partner, files = pairs.len(), "taking files an earlier run had claimed");
    }
    pairs
        .into_iter()
        .map(|(name, sidecar)| {
            (
                name,
                Claim {
                    sidecar,
                    ..Claim::default()
                },
            )
        })
        .collect()
}

/// Move a complete file (and its control file) out of the inbox into the
/// claimed directory; renames within one directory tree are atomic.
fn claim(
    inbox: &Path,
    claimed: &Path,
    name: &str,
    sidecar: Option<&str>,
) -> Result<(), WatchError> {
    std::fs::create_dir_all(claimed).map_err(|source| WatchError::Io {
        path: claimed.to_path_buf(),
        source,
    })?;
    for n in sidecar.into_iter().chain(std::iter::once(name)) {
        std::fs::rename(inbox.join(n), claimed.join(n)).map_err(|source| WatchError::Io {
            path: inbox.join(n),
            source,
        })?;
    }
    Ok(())
}

/// Pair ready data files with their control files (see
/// [`crate::identify::pair`]).
fn complete_pairs(
    gw: &Gateway,
    partner: &str,
    ready: &[String],
) -> (Vec<(String, Option<String>)>, Vec<String>) {
    match gw.config.partner(partner) {
        Some(p) => {
            let pairing = crate::identify::pair(&gw.formats, p, ready);
            (pairing.pairs, pairing.waiting)
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// Take one claimed file: record and judge it unless an earlier try got
/// that far (judging writes the receipt), then remove it — in that order, so
/// a crash or an error at any point loses nothing and records nothing twice.
async fn take(
    gw: &Gateway,
    inbox: &Inbox,
    claimed: &Path,
    name: &str,
    c: &mut Claim,
) -> Result<(), WatchError> {
    let path = claimed.join(name);
    let sidecar_path = c.sidecar.as_ref().map(|s| claimed.join(s));
    let actor = gateway_actor();
    if c.outcome.is_none() {
        let file_id = match c.file_id {
            Some(id) => id,
            None => {
                let mut arrival = Arrival::new(&inbox.partner, Channel::Watch, name, &actor);
                arrival.source_path = Some(inbox.dir.join(name).display().to_string());
                let bytes = Bytes::Files {
                    data: &path,
                    control: sidecar_path.as_deref(),
                };
                let id = gw.record(&arrival, bytes).await?;
                c.file_id = Some(id);
                id
            }
        };
        c.outcome =
            Some(
                gw.judge(file_id, &actor)
                    .await
                    .map_err(|source| IntakeError::Staged {
                        file_id,
                        source: Box::new(source),
                    })?,
            );
    }
    let Some(out) = c.outcome.as_mut() else {
        return Ok(());
    };
    // Whoever dropped the file learns what became of it before it leaves.
    let receipt = match &out.receipt {
        ReceiptStatus::Written(p) => p.clone(),
        _ => {
            let p = gw.write_receipt(out.file_id).await?;
            out.receipt = ReceiptStatus::Written(p.clone());
            p
        }
    };
    let files: Vec<PathBuf> = std::iter::once(path).chain(sidecar_path).collect();
    let claimed = claimed.to_path_buf();
    blocking(move || remove_claimed(&claimed, &files)).await?;
    tracing::info!(
        partner = %inbox.partner, file_id = out.file_id, name = %name.escape_debug(), verdict = %out.verdict,
        reason = %out.reason, receipt = %receipt.display(), "taken from inbox"
    );
    Ok(())
}

/// Remove the claimed files once recorded, judged and answered (file-system
/// work, run off the async threads so a hung mount cannot stall the runtime).
fn remove_claimed(claimed: &Path, files: &[PathBuf]) -> Result<(), WatchError> {
    for p in files {
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
    if let Ok(d) = std::fs::File::open(claimed) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Run blocking file-system work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, WatchError> + Send + 'static,
) -> Result<T, WatchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WatchError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
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
