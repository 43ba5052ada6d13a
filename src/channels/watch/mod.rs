//! Watched folders: one inbox per partner (`<data-dir>/inbox/<partner>/` by
//! default). A file is taken only when complete — not a temporary name
//! (`.x`, `*.tmp`, `*.part`, `*.filepart`), its size and modification time
//! unchanged for the settle time, and for formats with a control file, only
//! once the control file is there too (both are taken together). It is
//! claimed (see [`claim`]), recorded with its claim's key, judged (its
//! receipt `<name>.verdict` goes to `<data-dir>/receipts/<partner>/`), and
//! only then removed; whatever is killed when, a claim found again is
//! finished from its ledger row, never recorded twice.
//!
//! Only regular files are taken. Anything else in an inbox (a directory, a
//! FIFO, a symbolic link, a control file whose data file never comes) is
//! named once in the log with why it is not taken.
//!
//! `notify` events wake the scanner early; a periodic rescan is the safety
//! net (events are lost on overflow and on network file systems), and a
//! rescan at start takes what arrived while the gateway was down.

pub mod claim;
mod config;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::intake::{Arrival, Bytes, Gateway, IntakeError, gateway_actor};
use crate::model::Channel;
pub use claim::CLAIMED;
use claim::{Claimed, Owner};
pub use config::WatchSettings;

/// After this long without its counterpart, a waiting data or control file
/// is reported.
const CONTROL_FILE_WARNING: Duration = Duration::from_secs(600);

/// Files claimed together (their directories synced once).
const CLAIM_BATCH: usize = 256;

/// Claimed files whose arrivals are recorded in one ledger transaction.
const RECORD_BATCH: usize = 64;

/// The most files, and bytes, recorded and judged in one round of an
/// inbox: a file is recorded shortly before it is judged (one recorded
/// long before would look left unjudged to the nodes' sweep).
const ROUND_FILES: usize = 512;
const ROUND_BYTES: u64 = 128 << 20;

/// How long a failed file waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// One watched folder: a partner's inbox (files from the partner) or its
/// outbox (files for the partner, dropped by the settlement system).
#[derive(Debug, Clone)]
pub struct Inbox {
    pub partner: String,
    pub dir: PathBuf,
    /// Where whoever drops a file learns what became of it.
    pub receipts: PathBuf,
    pub direction: Direction,
}

impl Inbox {
    /// The folder's name in claim keys: its direction and partner.
    pub fn scope(&self) -> String {
        match self.direction {
            Direction::Inbound => format!("in:{}", self.partner),
            Direction::Outbound => format!("out:{}", self.partner),
        }
    }
}

/// Which way the files of a watched folder go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An inbox: each file is an arrival, judged and fed at most once.
    Inbound,
    /// An outbox: each file becomes a delivery to the partner.
    Outbound,
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
    #[error(transparent)]
    Outbound(Box<crate::outbound::OutboundError>),
}

impl From<crate::outbound::OutboundError> for WatchError {
    fn from(e: crate::outbound::OutboundError) -> WatchError {
        WatchError::Outbound(Box::new(e))
    }
}

/// An inbox as listed: the regular files that may be taken, and entries
/// that never will be, with why.
#[derive(Debug, Default)]
struct Listing {
    files: Vec<(String, Stat)>,
    odd: Vec<(String, &'static str)>,
}

/// List an inbox. Temporary names are passed over silently (they are being
/// written); entries that are not regular files are named with the reason.
fn list(dir: &Path) -> Result<Listing, WatchError> {
    let err = |source| WatchError::List {
        dir: dir.to_path_buf(),
        source,
    };
    let mut out = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            out.odd.push((
                entry.file_name().to_string_lossy().into_owned(),
                "its name is not UTF-8",
            ));
            continue;
        };
        if is_temporary(&name) {
            continue;
        }
        // A file that vanished or cannot be statted is seen again next scan.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let why = if kind.is_symlink() {
            Some(
                "a symbolic link (the watched folder takes regular files only; copy or move the file in)",
            )
        } else if kind.is_dir() {
            Some("a directory (files in subdirectories are not taken)")
        } else if !kind.is_file() {
            Some("not a regular file (a FIFO, socket or device)")
        } else {
            None
        };
        if let Some(why) = why {
            out.odd.push((name, why));
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        out.files.push((
            name,
            Stat {
                size: meta.len(),
                mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            },
        ));
    }
    Ok(out)
}

/// A claimed file on its way through intake.
struct Pending {
    claimed: Claimed,
    /// Set once its arrival is recorded.
    file_id: Option<i64>,
    retry_at: Option<Instant>,
    failures: u32,
    /// The last failure's message: the same failure again is not logged
    /// again (a full disk retried every 10 s would flood the log).
    last_error: Option<String>,
    /// Taken: done with, to be dropped from the pending list.
    taken: bool,
}

impl Pending {
    fn new(claimed: Claimed) -> Pending {
        Pending {
            claimed,
            file_id: None,
            retry_at: None,
            failures: 0,
            last_error: None,
            taken: false,
        }
    }
}

/// Names reported once as not taken (or waiting), until they go away.
#[derive(Debug, Default)]
struct Reported {
    names: HashSet<String>,
}

impl Reported {
    /// Whether `name` is new to report; forgets names no longer present.
    fn first(&mut self, name: &str) -> bool {
        self.names.insert(name.to_string())
    }

    fn keep_only(&mut self, present: &HashSet<&str>) {
        self.names.retain(|n| present.contains(n.as_str()));
    }
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
    let owner = Arc::new(std::sync::Mutex::new(Owner::new(
        &inbox.dir,
        &inbox.scope(),
    )));
    let mut tracker = Tracker::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut reported_list_error = false;
    let mut reported = Reported::default();
    let mut waiting_since: HashMap<String, Instant> = HashMap::new();
    let mut last_adoption: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Claims of processes that died (at start, then every rescan) come
        // before new files.
        if last_adoption.is_none_or(|t| t.elapsed() >= settings.rescan) {
            last_adoption = Some(Instant::now());
            let (g, partner, direction) = (gw.clone(), inbox.partner.clone(), inbox.direction);
            let adopted = with_owner(&owner, move |o| {
                let pair = |names: &[String]| complete_pairs(&g, &partner, direction, names);
                o.adopt_dead(&pair)
            })
            .await;
            match adopted {
                Ok(claims) if !claims.is_empty() => {
                    tracing::warn!(partner = %inbox.partner, files = claims.len(), "taking files a stopped process had claimed");
                    pending.extend(claims.into_iter().map(Pending::new));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(partner = %inbox.partner, inbox = %inbox.dir.display(), error = %e, "cannot look for claims of stopped processes; retried at the next rescan")
                }
            }
        }
        let dir = inbox.dir.clone();
        let listing = match tokio::task::spawn_blocking(move || list(&dir)).await {
            Ok(Ok(l)) => {
                reported_list_error = false;
                l
            }
            Ok(Err(e)) => {
                if !reported_list_error {
                    tracing::error!(partner = %inbox.partner, error = %e, "inbox unreadable; retrying");
                    reported_list_error = true;
                }
                let _ = std::fs::create_dir_all(&inbox.dir);
                Listing::default()
            }
            Err(e) => {
                tracing::error!(partner = %inbox.partner, error = %e, "inbox listing failed");
                Listing::default()
            }
        };
        let present: HashSet<&str> = listing
            .files
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(listing.odd.iter().map(|(n, _)| n.as_str()))
            .collect();
        reported.keep_only(&present);
        for (name, why) in &listing.odd {
            if reported.first(name) {
                tracing::warn!(partner = %inbox.partner, inbox = %inbox.dir.display(), name = %name.escape_debug(), "not taken: {why}");
            }
        }
        let now = Instant::now();
        let ready = tracker.observe(&listing.files, now, settings.settle);
        let (pairs, waiting) = complete_pairs(&gw, &inbox.partner, inbox.direction, &ready);
        // A data file whose control file does not come (or a control file
        // without its data file) is not complete and is not taken; say so
        // once, so an operator can chase the partner.
        let paired: HashSet<&str> = pairs
            .iter()
            .flat_map(|(d, c)| std::iter::once(d.as_str()).chain(c.as_deref()))
            .collect();
        let lonely: Vec<String> = match gw.config.partner(&inbox.partner) {
            Some(p) => {
                let formats = formats_of(&gw, p, inbox.direction);
                ready
                    .iter()
                    .filter(|n| !paired.contains(n.as_str()) && formats.is_control_file(n))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let incomplete: Vec<(String, &str)> = waiting
            .into_iter()
            .map(|n| {
                (
                    n,
                    "still waiting for its control file; not taken without it",
                )
            })
            .chain(lonely.into_iter().map(|n| {
                (
                    n,
                    "a control file whose data file has not come; not taken alone",
                )
            }))
            .collect();
        waiting_since.retain(|name, _| incomplete.iter().any(|(n, _)| n == name));
        for (name, why) in &incomplete {
            let since = *waiting_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) >= CONTROL_FILE_WARNING && reported.first(name) {
                tracing::warn!(partner = %inbox.partner, file = %inbox.dir.join(name).display(), "{why}");
            }
        }
        // Claimed in batches: the directories of a batch's renames are
        // synced once for the batch.
        for batch in pairs.chunks(CLAIM_BATCH) {
            let files = batch.to_vec();
            let claims = match with_owner(&owner, move |o| o.claim_all(&files)).await {
                Ok(claims) => claims,
                Err(e) => {
                    tracing::error!(partner = %inbox.partner, inbox = %inbox.dir.display(), files = batch.len(), error = %e, "could not claim files; they are retried");
                    continue;
                }
            };
            for ((data, control), claim) in batch.iter().zip(claims) {
                match claim {
                    Ok(Some(claimed)) => {
                        tracker.forget(data);
                        if let Some(s) = control {
                            tracker.forget(s);
                        }
                        pending.push(Pending::new(claimed));
                    }
                    // Taken by another process watching this inbox.
                    Ok(None) => {
                        tracker.forget(data);
                        tracing::debug!(partner = %inbox.partner, name = %data.escape_debug(), "taken by another process");
                    }
                    Err(e) => {
                        tracing::error!(partner = %inbox.partner, file = %inbox.dir.join(data).display(), error = %e, "could not claim file; it stays in the inbox and is retried")
                    }
                }
            }
        }
        // One round: the claimed files that may go now (a file of the same
        // name claimed earlier goes first), up to `ROUND_FILES` and
        // `ROUND_BYTES`. Their arrivals are recorded `RECORD_BATCH` in one
        // transaction (one that fails there is recorded alone by `take`,
        // which reports its error); then up to `parallel_files` are taken at
        // once, each judged and fed in its own transactions as alone, while
        // their fsyncs and commits overlap.
        let mut ready: Vec<&mut Pending> = ready_now(&mut pending).take(ROUND_FILES).collect();
        let paths: Vec<PathBuf> = ready.iter().map(|p| p.claimed.data_path()).collect();
        let sizes = if paths.is_empty() {
            Vec::new()
        } else {
            tokio::task::spawn_blocking(move || {
                paths
                    .iter()
                    .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
                    .collect::<Vec<u64>>()
            })
            .await
            .unwrap_or_default()
        };
        ready.truncate(round_len(&sizes, ready.len()));
        if inbox.direction == Direction::Inbound {
            let mut unrecorded: Vec<&mut &mut Pending> =
                ready.iter_mut().filter(|p| p.file_id.is_none()).collect();
            for batch in unrecorded.chunks_mut(RECORD_BATCH) {
                if *shutdown.borrow() {
                    break;
                }
                record_together(&gw, &inbox, batch, settings.parallel_files).await;
            }
        }
        let (gw_ref, inbox_ref, owner_ref, shutdown_ref) = (&gw, &inbox, &owner, &shutdown);
        futures::stream::iter(ready)
            .for_each_concurrent(settings.parallel_files, |p| async move {
                if *shutdown_ref.borrow() {
                    return;
                }
                match take(gw_ref, inbox_ref, owner_ref, p).await {
                    Ok(()) => {
                        p.taken = true;
                        if p.failures > 0 {
                            tracing::info!(partner = %inbox_ref.partner, name = %p.claimed.data.escape_debug(), attempts = p.failures + 1, "taken after earlier failures");
                        }
                    }
                    Err(e) => {
                        let e = match e {
                            WatchError::Intake(e) => WatchError::Intake(gw_ref.explain(e).await),
                            other => other,
                        };
                        p.failures += 1;
                        let message = e.to_string();
                        if p.last_error.as_deref() != Some(message.as_str()) {
                            tracing::error!(partner = %inbox_ref.partner, file = %p.claimed.data_path().display(), attempts = p.failures, error = %message, "could not take file; it is kept and retried every 10 s (the same error is not logged again)");
                            p.last_error = Some(message);
                        }
                        p.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            })
            .await;
        pending.retain(|p| !p.taken);
        let more = ready_now(&mut pending).next().is_some();
        if pending.is_empty() {
            let _ = with_owner(&owner, |o| {
                o.release();
                Ok(())
            })
            .await;
        }
        let wait = if more {
            // The next round's files are claimed already.
            Duration::ZERO
        } else if tracker.pending() || !pending.is_empty() {
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
            changed = shutdown.changed() => {
                // Its sender gone, the gateway is stopping (a start that
                // failed drops it without a word): stop too.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!(partner = %inbox.partner, "inbox stopped");
}

/// How many of `count` files (the first `sizes.len()` of them of these
/// sizes) make a round: the files before the one that takes the round past
/// `ROUND_BYTES`, and at least one.
fn round_len(sizes: &[u64], count: usize) -> usize {
    let mut bytes = 0u64;
    sizes
        .iter()
        .position(|size| {
            bytes = bytes.saturating_add(*size);
            bytes > ROUND_BYTES
        })
        .map_or(count, |past| past.max(1))
}

/// The pending files that may be taken now, in claim order: not waiting to
/// be retried, and the first of each name.
fn ready_now(pending: &mut [Pending]) -> impl Iterator<Item = &mut Pending> {
    let now = Instant::now();
    let mut names = HashSet::new();
    pending
        .iter_mut()
        .filter(move |p| names.insert(p.claimed.data.clone()))
        .filter(move |p| p.retry_at.is_none_or(|t| t <= now))
}

/// Claim work (renames, fsyncs, locks) on the blocking pool.
async fn with_owner<T: Send + 'static>(
    owner: &Arc<std::sync::Mutex<Owner>>,
    f: impl FnOnce(&mut Owner) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let owner = owner.clone();
    tokio::task::spawn_blocking(move || {
        // A panic elsewhere leaves the owner as it was: still usable.
        let mut o = owner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut o)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// The formats of a folder's files: what the partner sends, or what it is sent.
fn formats_of<'a>(
    gw: &'a Gateway,
    p: &'a crate::config::Partner,
    direction: Direction,
) -> crate::identify::Formats<'a, 'a> {
    match direction {
        Direction::Inbound => crate::identify::Formats::inbound(&gw.formats, p),
        Direction::Outbound => crate::identify::Formats::outbound(&gw.formats, p),
    }
}

/// Pair ready data files with their control files (see
/// [`crate::identify::Formats::pair`]).
fn complete_pairs(
    gw: &Gateway,
    partner: &str,
    direction: Direction,
    ready: &[String],
) -> (Vec<(String, Option<String>)>, Vec<String>) {
    match gw.config.partner(partner) {
        Some(p) => {
            let pairing = formats_of(gw, p, direction).pair(ready);
            (pairing.pairs, pairing.waiting)
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// Record the arrivals of claimed files in one ledger transaction; each
/// recorded one keeps its file id.
async fn record_together(
    gw: &Gateway,
    inbox: &Inbox,
    batch: &mut [&mut &mut Pending],
    parallel: usize,
) {
    let actor = gateway_actor();
    let paths: Vec<(PathBuf, Option<PathBuf>)> = batch
        .iter()
        .map(|p| (p.claimed.data_path(), p.claimed.control_path()))
        .collect();
    let arrivals: Vec<(Arrival, Bytes<'_>)> = batch
        .iter()
        .zip(&paths)
        .map(|(p, (data, control))| {
            (
                arrival_of(inbox, &p.claimed, &actor),
                Bytes::Files {
                    data,
                    control: control.as_deref(),
                },
            )
        })
        .collect();
    let recorded = gw.record_all(&arrivals, parallel).await;
    for (p, r) in batch.iter_mut().zip(recorded) {
        match r {
            Ok(id) => p.file_id = Some(id),
            Err(e) => {
                tracing::debug!(partner = %inbox.partner, name = %p.claimed.data.escape_debug(), error = %e, "not recorded with its batch; recorded alone")
            }
        }
    }
}

/// The arrival of a claimed file from an inbox.
fn arrival_of(inbox: &Inbox, c: &Claimed, actor: &str) -> Arrival {
    let mut arrival = Arrival::new(&inbox.partner, Channel::Watch, &c.data, actor);
    arrival.source_path = Some(inbox.dir.join(&c.data).display().to_string());
    arrival.claim = Some(c.key.clone());
    arrival
}

/// Take one claimed file: record it with its claim's key (a claim recorded
/// before a crash is found, not recorded again), finish it (judge it if
/// still unjudged; its receipt), then remove it — in that order, so a crash
/// or an error at any point loses nothing and records nothing twice.
async fn take(
    gw: &Gateway,
    inbox: &Inbox,
    owner: &Arc<std::sync::Mutex<Owner>>,
    p: &mut Pending,
) -> Result<(), WatchError> {
    let actor = gateway_actor();
    let c = p.claimed.clone();
    let (data, control) = (c.data_path(), c.control_path());
    let bytes = Bytes::Files {
        data: &data,
        control: control.as_deref(),
    };
    let source_path = inbox.dir.join(&c.data).display().to_string();
    // What became of it, for the log line.
    let (id, what, why) = match inbox.direction {
        Direction::Inbound => {
            let file_id = match p.file_id {
                Some(id) => id,
                None => {
                    let id = gw.record(&arrival_of(inbox, &c, &actor), bytes).await?;
                    p.file_id = Some(id);
                    id
                }
            };
            let row = gw.finish(file_id, &actor).await?;
            (
                file_id,
                row.state.to_string(),
                row.reason.unwrap_or_default(),
            )
        }
        Direction::Outbound => {
            let out = gw
                .submit(&crate::outbound::Submission {
                    partner: &inbox.partner,
                    endpoint: None,
                    name: &c.data,
                    bytes,
                    control_name: c.control.as_deref(),
                    source: crate::model::DeliverySource::Outbox,
                    source_path: Some(&source_path),
                    reason: None,
                    claim: Some(&c.key),
                    actor: &actor,
                })
                .await?;
            gw.delivery_receipt(out.delivery.id).await;
            let d = out.delivery;
            (d.id, d.state.to_string(), d.error.unwrap_or_default())
        }
    };
    let claimed = c.clone();
    with_owner(owner, move |o| o.done(&claimed))
        .await
        .map_err(|source| WatchError::Io {
            path: c.dir.clone(),
            source,
        })?;
    match inbox.direction {
        Direction::Inbound => tracing::info!(
            partner = %inbox.partner, file_id = id, name = %c.data.escape_debug(), verdict = %what,
            reason = %why, "taken from inbox"
        ),
        Direction::Outbound => tracing::info!(
            partner = %inbox.partner, delivery_id = id, name = %c.data.escape_debug(), state = %what,
            error = %why, "taken from outbox"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_ends_before_the_file_that_takes_it_past_its_bytes() {
        let mib = 1 << 20;
        assert_eq!(round_len(&[mib; 3], 3), 3);
        assert_eq!(round_len(&[100 * mib, 28 * mib, 1], 3), 2);
        // A file larger than a round goes alone.
        assert_eq!(round_len(&[200 * mib, 1], 2), 1);
        assert_eq!(round_len(&[1, 200 * mib], 2), 1);
        // Sizes that could not be read count as nothing.
        assert_eq!(round_len(&[], 5), 5);
    }

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
