//! Scheduled SFTP pickup from partners' servers (channel `sftp-pull`).
//!
//! One pickup: connect (pinned host key) → list the remote directory →
//! decide which files are complete (done marker, or size and mtime unchanged
//! across two listings) → download each into the content store with many
//! reads in flight, hashing on the way → record it (and what it was on the
//! server) → judge → only then the after-pickup action (archive, delete or
//! leave). A dropped connection is retried with exponential back-off; a
//! partial download is discarded, never judged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::sync::watch;

use super::ssh::{SftpConnection, SshError};
use crate::cluster::Lease;
use crate::config::{AfterPickup, Completion, Endpoint, Partner};
use crate::intake::{
    Arrival, Arriving, Bytes, Gateway, IntakeError, Outcome, Verified, WriteBehind,
    WriteBehindError, gateway_actor,
};
use crate::ledger::{LedgerError, RemoteFile};
use crate::model::Channel;
use crate::stage::{StoreError, Stored};

/// Reads in flight per download at most: enough to fill a 16 MiB window
/// with 255 KiB reads across a long link, like `sftp -R`.
const READS_IN_FLIGHT: usize = 64;

/// How many reads to keep in flight, given what the link has delivered so
/// far. Each read must be answered within `io_timeout` of being sent, and the
/// replies queue behind each other on the link, so only as many go out as
/// the link has shown it carries in half that time. A download starts with
/// one and widens as the replies come in: on a fast link the window is full
/// after the first reply, on a slow one (a throttled VPN) no read waits
/// longer than the timeout behind the others.
fn reads_in_flight(received: u64, elapsed: Duration, io_timeout: Duration, read_len: u64) -> usize {
    if received == 0 || read_len == 0 {
        return 1;
    }
    let rate = received as f64 / elapsed.as_secs_f64().max(1e-3);
    let carried = rate * io_timeout.as_secs_f64() / 2.0;
    ((carried / read_len as f64) as usize).clamp(1, READS_IN_FLIGHT)
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{addr}: {op} {path}: {source}")]
    Sftp {
        addr: String,
        op: &'static str,
        path: String,
        source: SftpError,
    },
    #[error("{addr}: {path}: {message}")]
    Download {
        addr: String,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{path}: not taken: {source}")]
    Intake { path: String, source: IntakeError },
    #[error("{0}")]
    Unknown(String),
    /// This node no longer holds the endpoint's pickup lease: the pickup
    /// stops before it records or archives anything further.
    #[error("the pickup lease {0} was lost; pickup stopped (another node takes the next run)")]
    LeaseLost(String),
}

impl PullError {
    /// A dropped connection or a timeout: the pickup is tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Ssh(e) => e.is_transient(),
            PullError::Sftp { source, .. } => !matches!(source, SftpError::Status(_)),
            // This file did not match its listing (changed, a size the
            // server misreports): reported, and the other files still taken.
            PullError::Download { .. } => false,
            _ => false,
        }
    }

    /// The pickup lease was lost: nothing more is taken by this node.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            PullError::LeaseLost(_)
                | PullError::Ledger(LedgerError::LeaseLost(_))
                | PullError::Intake {
                    source: IntakeError::Ledger(LedgerError::LeaseLost(_)),
                    ..
                }
        )
    }
}

fn sftp_err(addr: &str, op: &'static str, path: &str) -> impl FnOnce(SftpError) -> PullError {
    let (addr, path) = (addr.to_string(), path.to_string());
    move |source| PullError::Sftp {
        addr,
        op,
        path,
        source,
    }
}

/// A remote directory entry as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub size: u64,
    pub mtime: i64,
}

pub type Listing = BTreeMap<String, Listed>;

/// A complete remote file to take, with its control file and done marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub listed: Listed,
    pub sidecar: Option<(String, Listed)>,
    pub marker: Option<String>,
}

/// Which listed files are complete. `second` is the listing taken the
/// stability interval after `first` (`None` under a done-marker rule).
/// `pairs` maps each data file to its control file (see
/// [`crate::identify::pair`]). Pure; returns the candidates and the names
/// still waiting.
pub fn complete_files(
    first: &Listing,
    second: Option<&Listing>,
    completion: &Completion,
    pairs: &[(String, Option<String>)],
) -> (Vec<Candidate>, Vec<String>) {
    let mut take = Vec::new();
    let mut waiting = Vec::new();
    // Listed in the first listing and, under the stability rule, unchanged in
    // the second.
    let settled = |name: &str| -> Option<Listed> {
        let l = *first.get(name)?;
        match (completion, second) {
            (Completion::Stable(_), Some(s)) => (s.get(name) == Some(&l)).then_some(l),
            (Completion::Stable(_), None) => None,
            (Completion::DoneMarker(_), _) => Some(l),
        }
    };
    for (name, sidecar) in pairs {
        let marker = match completion {
            Completion::DoneMarker(sfx) => {
                let m = format!("{name}{sfx}");
                // A marker older than the file (or its control file) is a
                // left-over from an earlier file of the same name.
                let fresh = first.get(&m).is_some_and(|mk| {
                    std::iter::once(name)
                        .chain(sidecar.as_ref())
                        .all(|n| first.get(n).is_none_or(|l| mk.mtime >= l.mtime))
                });
                if !fresh {
                    waiting.push(name.clone());
                    continue;
                }
                Some(m)
            }
            Completion::Stable(_) => None,
        };
        let Some(listed) = settled(name) else {
            waiting.push(name.clone());
            continue;
        };
        let sidecar = match sidecar {
            Some(s) => match settled(s) {
                Some(l) => Some((s.clone(), l)),
                None => {
                    waiting.push(name.clone());
                    continue;
                }
            },
            None => None,
        };
        take.push(Candidate {
            name: name.clone(),
            listed,
            sidecar,
            marker,
        });
    }
    (take, waiting)
}

/// What one file of a pickup became.
#[derive(Debug)]
pub struct Taken {
    pub name: String,
    pub remote_path: String,
    /// Its verdict, when judged.
    pub outcome: Option<Outcome>,
    /// Recorded but not judged (the next `serve` start judges it), or a
    /// download that was discarded.
    pub error: Option<String>,
    /// The after-pickup action failed (the file is remembered; the action is
    /// tried again next pickup).
    pub after_pickup_error: Option<String>,
    /// The same bytes from the same remote file (path, size, mtime) were
    /// taken before as this file, and its after-pickup action failed then:
    /// not recorded again, only the action retried.
    pub already_taken: Option<i64>,
}

impl Taken {
    fn new(c: &Candidate, remote: &RemoteFile) -> Taken {
        Taken {
            name: c.name.clone(),
            remote_path: remote.path.clone(),
            outcome: None,
            error: None,
            after_pickup_error: None,
            already_taken: None,
        }
    }

    /// A file that could not be taken, and why.
    fn failed(c: &Candidate, remote: &RemoteFile, error: String) -> Taken {
        Taken {
            error: Some(error),
            ..Taken::new(c, remote)
        }
    }
}

/// The result of one pickup from one endpoint.
#[derive(Debug, Default)]
pub struct PullReport {
    pub partner: String,
    pub endpoint: String,
    pub taken: Vec<Taken>,
    /// Files seen but not complete yet.
    pub waiting: Vec<String>,
    /// Entries that match the glob but cannot be taken (a symbolic link,
    /// a special file, a name with control characters, no attributes).
    pub skipped: Vec<Skipped>,
    /// Why the pickup stopped, if it did; what was taken before stays in
    /// `taken`.
    pub error: Option<PullError>,
    /// Connection attempts made.
    pub attempts: u32,
}

/// One pickup now, retrying a dropped connection with exponential back-off
/// (the endpoint's `retries`, `retry_initial_seconds`, `retry_max_seconds`).
/// Files taken before a drop stay taken: the retry lists again and skips them.
/// The report lists every file taken, also when the pickup then failed
/// (`error`).
pub async fn pull(gw: &Gateway, partner: &str, endpoint: &str) -> PullReport {
    pull_under(gw, partner, endpoint, None).await
}

/// [`pull`] under the endpoint's pickup lease (`serve`): every arrival is
/// recorded only while the lease is held (checked in the recording
/// transaction), and the lease is checked again before each after-pickup
/// action; once it is lost the pickup stops.
pub async fn pull_under(
    gw: &Gateway,
    partner: &str,
    endpoint: &str,
    lease: Option<&Lease>,
) -> PullReport {
    let mut report = PullReport {
        partner: partner.to_string(),
        endpoint: endpoint.to_string(),
        ..PullReport::default()
    };
    if let Err(e) = pull_into(gw, partner, endpoint, lease, &mut report).await {
        report.error = Some(e);
    }
    report
}

async fn pull_into(
    gw: &Gateway,
    partner: &str,
    endpoint: &str,
    lease: Option<&Lease>,
    report: &mut PullReport,
) -> Result<(), PullError> {
    let p = gw
        .config
        .partner(partner)
        .ok_or_else(|| PullError::Unknown(format!("unknown partner {partner:?}")))?;
    let ep = p
        .endpoints
        .iter()
        .find(|e| e.name == endpoint)
        .ok_or_else(|| {
            PullError::Unknown(format!(
                "partner {partner} has no endpoint {endpoint:?} (configured: {})",
                p.endpoints
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(ep.retry.initial)
            .with_max_delay(ep.retry.max)
            .with_max_times(ep.retry.retries as usize)
            .with_jitter(),
    );
    loop {
        report.attempts += 1;
        match pickup_once(gw, p, ep, lease, report).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => match delays.next() {
                Some(delay) => {
                    tracing::warn!(partner = %p.id, endpoint = %ep.name, attempt = report.attempts, retry_in = ?delay, error = %e, "pickup interrupted; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

async fn pickup_once(
    gw: &Gateway,
    p: &Partner,
    ep: &Endpoint,
    lease: Option<&Lease>,
    report: &mut PullReport,
) -> Result<(), PullError> {
    let conn = SftpConnection::open(ep).await?;
    let result = pickup_on(gw, p, ep, &conn, lease, report).await;
    conn.close().await;
    result
}

async fn pickup_on(
    gw: &Gateway,
    p: &Partner,
    ep: &Endpoint,
    conn: &SftpConnection,
    lease: Option<&Lease>,
    report: &mut PullReport,
) -> Result<(), PullError> {
    let (first, skipped) = list(conn, ep).await?;
    let second = match ep.completion {
        Completion::Stable(wait) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some(list(conn, ep).await?.0)
        }
        Completion::DoneMarker(_) => None,
    };
    // Entries that match the glob but cannot be taken: reported and logged
    // once per pickup, never stopping the files after them.
    let skipped: Vec<Skipped> = skipped
        .into_iter()
        .filter(|s| ep.glob.matches(&s.name) && !super::watch::is_temporary(&s.name))
        .collect();
    for s in &skipped {
        if !report.skipped.contains(s) {
            tracing::warn!(partner = %p.id, endpoint = %ep.name, name = %s.name.escape_debug(), reason = %s.reason, "remote entry not taken");
        }
    }
    report.skipped = skipped;
    // Control files are paired with their data file, whatever the glob;
    // done markers are never taken themselves.
    let all: Vec<String> = first.keys().cloned().collect();
    let crate::identify::Pairing {
        pairs,
        waiting: no_sidecar,
    } = crate::identify::pair(&gw.formats, p, &all);
    // Names a partner writes under before renaming (`.x`, `*.part`, …) are
    // never complete files, however long they stay unchanged.
    let wanted = |n: &str| {
        !super::watch::is_temporary(n)
            && ep.glob.matches(n)
            && match &ep.completion {
                Completion::DoneMarker(sfx) => !n.ends_with(sfx.as_str()),
                Completion::Stable(_) => true,
            }
    };
    let pairs: Vec<(String, Option<String>)> =
        pairs.into_iter().filter(|(n, _)| wanted(n)).collect();
    let (candidates, mut waiting) = complete_files(&first, second.as_ref(), &ep.completion, &pairs);
    waiting.extend(no_sidecar.into_iter().filter(|n| wanted(n)));
    waiting.sort();
    report.waiting = waiting;

    // Several files in flight: each download is a few round trips (open;
    // stat, reads and the end-of-file check together; close and stat
    // together), so across a long link the files overlap. They are still
    // recorded and judged one at a time in listing order (`Turns`), and the
    // report keeps that order.
    let turns = Turns::default();
    let mut steps: Vec<(usize, Step)> = futures::stream::iter(candidates.into_iter().enumerate())
        .map(|(i, c)| {
            let turns = &turns;
            async move {
                let turn = Turn { turns, index: i };
                (i, take_in_turn(gw, p, ep, conn, &c, turn, lease).await)
            }
        })
        .buffer_unordered(DOWNLOADS_IN_FLIGHT)
        .collect()
        .await;
    steps.sort_by_key(|(i, _)| *i);
    let mut ended = None;
    for (_, step) in steps {
        match step {
            Step::Taken(taken) => report.taken.push(*taken),
            Step::Skip => {}
            Step::End(e) => {
                ended.get_or_insert(e);
            }
        }
    }
    ended.map_or(Ok(()), Err)
}

/// Files downloaded at once per pickup at most.
pub const DOWNLOADS_IN_FLIGHT: usize = 8;

/// What became of one candidate.
enum Step {
    /// Taken, or reported as not taken (too large, a problem with this file).
    Taken(Box<Taken>),
    /// Taken before (under `leave`), or not reached because the attempt ended.
    Skip,
    /// A problem that ends this attempt (a dropped connection is retried).
    End(PullError),
}

/// Whose turn it is to be recorded: candidates are recorded in listing
/// order, whatever order their downloads finish in.
#[derive(Default)]
struct Turns {
    next: tokio::sync::watch::Sender<usize>,
    /// Indexes done while an earlier one was not.
    done: std::sync::Mutex<std::collections::BTreeSet<usize>>,
    /// Set when one candidate ended the pickup (the link, the lease): the
    /// others take nothing further.
    stop: std::sync::atomic::AtomicBool,
}

/// One candidate's place in [`Turns`]; its turn passes on when it is dropped.
struct Turn<'a> {
    turns: &'a Turns,
    index: usize,
}

impl Turn<'_> {
    /// Wait until every earlier candidate is done.
    async fn wait(&self) {
        let mut next = self.turns.next.subscribe();
        // The sender lives as long as `self.turns`.
        let _ = next.wait_for(|n| *n >= self.index).await;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut done = self.turns.done.lock().unwrap_or_else(|e| e.into_inner());
        done.insert(self.index);
        self.turns.next.send_modify(|n| {
            while done.remove(n) {
                *n += 1;
            }
        });
    }
}

/// One candidate: checks, download, then — in its turn — record and judge,
/// then the after-pickup action.
async fn take_in_turn(
    gw: &Gateway,
    p: &Partner,
    ep: &Endpoint,
    conn: &SftpConnection,
    c: &Candidate,
    turn: Turn<'_>,
    lease: Option<&Lease>,
) -> Step {
    use std::sync::atomic::Ordering;
    let turns: &Turns = turn.turns;
    let stop = &turns.stop;
    let remote = RemoteFile {
        partner: p.id.clone(),
        endpoint: ep.name.clone(),
        path: remote_path(&ep.remote_dir, &c.name),
        size: c.listed.size,
        mtime: c.listed.mtime,
    };
    // A partner's server must not be able to fill the data directory.
    if c.listed.size > ep.max_file_bytes {
        let message = format!(
            "{} bytes is more than max_file_bytes ({}); left on the server",
            c.listed.size, ep.max_file_bytes
        );
        tracing::error!(partner = %p.id, endpoint = %ep.name, name = %c.name.escape_debug(), %message, "file not taken");
        return Step::Taken(Box::new(Taken::failed(c, &remote, message)));
    }
    let end = |e: PullError| {
        stop.store(true, Ordering::SeqCst);
        Step::End(e)
    };
    if stop.load(Ordering::SeqCst) {
        return Step::Skip;
    }
    if let Some(l) = lease
        && l.fence().is_none()
    {
        return end(PullError::LeaseLost(l.name().to_string()));
    }
    // Under `leave` the ledger remembers what was taken. Under `archive`
    // and `delete` a file still (or again) present is downloaded again,
    // even if it looks the same: a re-publication with equal size and
    // mtime must not be archived unread. When its bytes are those taken
    // before, only the failed after-pickup action is redone (`record_in_turn`).
    if ep.after_pickup == AfterPickup::Leave {
        match gw.ledger.remote_taken(&remote).await {
            Ok(Some(_)) => return Step::Skip,
            Ok(None) => {}
            Err(e) => return end(e.into()),
        }
    }
    // A connection problem ends this attempt (and is retried); a problem
    // with one file (permissions, the store, the ledger) is reported and
    // the other files are still taken.
    let failed = |e: PullError| {
        if e.is_transient() || e.is_lease_lost() {
            return end(e);
        }
        tracing::error!(partner = %p.id, endpoint = %ep.name, name = %c.name.escape_debug(), error = %e, "file not taken");
        Step::Taken(Box::new(Taken::failed(c, &remote, e.to_string())))
    };
    let fetched = match fetch(gw, p, ep, conn, c, &remote).await {
        Ok(f) => f,
        Err(e) => return failed(e),
    };
    turn.wait().await;
    if stop.load(Ordering::SeqCst) {
        return Step::Skip;
    }
    let taken = match record_in_turn(gw, p, ep, c, &remote, fetched, lease).await {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    drop(turn);
    if let Some(l) = lease
        && ep.after_pickup != AfterPickup::Leave
        && !l.still_held().await
    {
        return end(PullError::LeaseLost(l.name().to_string()));
    }
    Step::Taken(Box::new(finish(conn, p, ep, c, taken).await))
}

fn remote_path(dir: &str, name: &str) -> String {
    match dir {
        "" | "." => name.to_string(),
        d => format!("{}/{name}", d.trim_end_matches('/')),
    }
}

/// A downloaded file (and its control file), with its facts when it was
/// verified on the way in.
struct Fetched {
    data: Stored,
    control: Option<Stored>,
    verified: Option<Verified>,
}

/// Download a candidate and its control file into the store.
async fn fetch(
    gw: &Gateway,
    p: &Partner,
    ep: &Endpoint,
    conn: &SftpConnection,
    c: &Candidate,
    remote: &RemoteFile,
) -> Result<Fetched, PullError> {
    let control = match &c.sidecar {
        Some((name, l)) => Some(
            download(conn, gw, &remote_path(&ep.remote_dir, name), *l, None)
                .await?
                .0,
        ),
        None => None,
    };
    let (data, verified) = download(
        conn,
        gw,
        &remote.path,
        c.listed,
        Some((p.id.as_str(), c.name.as_str())),
    )
    .await?;
    Ok(Fetched {
        data,
        control,
        verified,
    })
}

/// Record and judge a downloaded file — unless these very bytes of this
/// very remote file were taken before and only its after-pickup action
/// failed then.
async fn record_in_turn(
    gw: &Gateway,
    p: &Partner,
    ep: &Endpoint,
    c: &Candidate,
    remote: &RemoteFile,
    fetched: Fetched,
    lease: Option<&Lease>,
) -> Result<Taken, PullError> {
    let mut arrival = Arrival::new(&p.id, Channel::SftpPull, &c.name, &gateway_actor());
    arrival.endpoint = Some(ep.name.clone());
    arrival.source_path = Some(format!(
        "sftp://{}@{}:{}/{}",
        ep.user,
        ep.host,
        ep.port,
        remote.path.trim_start_matches('/')
    ));
    arrival.remote = Some(remote.clone());
    if let Some(l) = lease {
        arrival.fence = Some(
            l.fence()
                .ok_or_else(|| PullError::LeaseLost(l.name().to_string()))?,
        );
    }
    let mut taken = Taken::new(c, remote);
    // Still there with the same identity and the same bytes: taken before,
    // and its after-pickup action failed then (a read-only account, a
    // missing archive directory). Recording it again would add a duplicate
    // arrival on every pickup; only the action is tried again. Comparing the
    // bytes, not just size and mtime, keeps a re-publication from being
    // archived unread.
    let source = arrival.source_path.as_deref().unwrap_or_default();
    let earlier = if gw.ledger.remote_taken(remote).await?.is_some() {
        let checksum = &fetched.data.checksum;
        gw.ledger
            .taken_from(&p.id, &ep.name, source, checksum)
            .await?
    } else {
        None
    };
    if let Some(earlier) = earlier {
        tracing::info!(partner = %p.id, endpoint = %ep.name, name = %c.name.escape_debug(), file_id = earlier, "already taken; retrying its after-pickup action");
        taken.already_taken = Some(earlier);
    } else {
        record_and_judge(
            gw,
            ep,
            c,
            remote,
            &arrival,
            &fetched.data,
            fetched.control.as_ref(),
            fetched.verified,
            &mut taken,
        )
        .await?;
    }
    Ok(taken)
}

/// The after-pickup action of a file recorded (or taken before).
async fn finish(
    conn: &SftpConnection,
    p: &Partner,
    ep: &Endpoint,
    c: &Candidate,
    mut taken: Taken,
) -> Taken {
    if let Err(e) = after_pickup(conn, ep, c).await {
        tracing::warn!(partner = %p.id, endpoint = %ep.name, name = %c.name.escape_debug(), error = %e, "after-pickup action failed; retried next pickup");
        taken.after_pickup_error = Some(e.to_string());
    }
    taken
}

/// Record and judge a downloaded file (judging writes its receipt).
#[allow(clippy::too_many_arguments)]
async fn record_and_judge(
    gw: &Gateway,
    ep: &Endpoint,
    c: &Candidate,
    remote: &RemoteFile,
    arrival: &Arrival,
    stored: &Stored,
    side: Option<&Stored>,
    verified: Option<Verified>,
    taken: &mut Taken,
) -> Result<(), PullError> {
    let bytes = Bytes::Stored {
        data: stored,
        control: side,
    };
    match gw.intake_verified(arrival, bytes, verified).await {
        Ok(out) => {
            tracing::info!(partner = %arrival.partner, endpoint = %ep.name, name = %c.name.escape_debug(), file_id = out.file_id, verdict = %out.verdict, "pulled");
            taken.outcome = Some(out);
        }
        // Recorded, not judged: the bytes are safe and will be judged.
        Err(IntakeError::Staged { file_id, source }) => {
            tracing::error!(partner = %arrival.partner, endpoint = %ep.name, name = %c.name.escape_debug(), file_id, error = %source, "pulled and recorded, not judged");
            taken.error = Some(format!("file {file_id} recorded, not judged: {source}"));
        }
        // Not recorded: leave the remote file where it is.
        Err(source) => {
            return Err(PullError::Intake {
                path: remote.path.clone(),
                source,
            });
        }
    }
    Ok(())
}

/// A remote entry the pickup leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// File type bits of an SFTP `permissions` field (POSIX `S_IFMT`).
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// What a remote entry is, from its attributes: only a regular file with a
/// size and mtime can be taken (completeness and a whole download are
/// checked against them). `Err` says why not.
fn classify(attrs: &FileAttributes) -> Result<Listed, &'static str> {
    let Some(mode) = attrs.permissions else {
        return Err("the server gives no file type");
    };
    match mode & S_IFMT {
        S_IFREG => {}
        0o040000 => return Err("directory"),
        0o120000 => return Err("a symbolic link (only regular files are taken)"),
        _ => return Err("not a regular file (a socket, device or pipe)"),
    }
    match (attrs.size, attrs.mtime) {
        (Some(size), Some(mtime)) => Ok(Listed {
            size,
            mtime: i64::from(mtime),
        }),
        _ => Err("the server gives no size or modification time"),
    }
}

/// Why a remote name cannot be taken as it is: not UTF-8 (the SFTP library
/// cannot ask for it faithfully), a `/`, or control characters (they would
/// forge lines wherever the name is printed; the SFTP server refuses them too).
fn refused_name(name: &str) -> Option<&'static str> {
    if name.contains('\u{FFFD}') {
        Some("the name is not UTF-8")
    } else if name.contains('/') {
        Some("the name holds a '/'")
    } else if name.chars().any(char::is_control) {
        Some("the name holds a control character")
    } else {
        None
    }
}

/// List the endpoint's remote directory: its regular files, and the entries
/// that look like files but cannot be taken (`skipped`, with why).
/// Directories are passed over silently. An entry listed without attributes
/// (some servers list names only) is asked for with a `stat`.
async fn list(conn: &SftpConnection, ep: &Endpoint) -> Result<(Listing, Vec<Skipped>), PullError> {
    let sftp = &conn.sftp;
    let dir = &ep.remote_dir;
    let handle = sftp
        .opendir(dir.as_str())
        .await
        .map_err(sftp_err(&conn.addr, "list", dir))?
        .handle;
    let mut entries = Vec::new();
    let result = loop {
        match sftp.readdir(handle.as_str()).await {
            Ok(names) => entries.extend(names.files),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
            Err(e) => break Err(sftp_err(&conn.addr, "list", dir)(e)),
        }
    };
    let _ = sftp.close(handle).await;
    result?;
    let mut listing = Listing::new();
    let mut skipped = Vec::new();
    for f in entries {
        if f.filename == "." || f.filename == ".." {
            continue;
        }
        if let Some(reason) = refused_name(&f.filename) {
            skipped.push(Skipped {
                name: f.filename,
                reason: reason.into(),
            });
            continue;
        }
        let mut attrs = f.attrs;
        if attrs.permissions.is_none() || attrs.size.is_none() || attrs.mtime.is_none() {
            let path = remote_path(dir, &f.filename);
            // lstat: a symbolic link is reported as one, not as its target.
            match sftp.lstat(path.as_str()).await {
                Ok(a) => attrs = a.attrs,
                Err(SftpError::Status(_)) => {}
                Err(e) => return Err(sftp_err(&conn.addr, "stat", &path)(e)),
            }
        }
        match classify(&attrs) {
            Ok(l) => {
                listing.insert(f.filename, l);
            }
            Err("directory") => {}
            Err(reason) => skipped.push(Skipped {
                name: f.filename,
                reason: reason.into(),
            }),
        }
    }
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((listing, skipped))
}

/// Download one remote file into the store: many reads in flight, bytes
/// written and hashed in order on a blocking thread — and verified there,
/// as the file of `verify` (partner, name), when given — the size checked
/// against the server's stat before and after. Any failure discards the
/// partial bytes. Three round trips for a small file: open; stat, reads
/// and the end-of-file check together; close and stat together.
async fn download(
    conn: &SftpConnection,
    gw: &Gateway,
    path: &str,
    listed: Listed,
    verify: Option<(&str, &str)>,
) -> Result<(Stored, Option<Verified>), PullError> {
    let sftp: &Arc<RawSftpSession> = &conn.sftp;
    let addr = conn.addr.as_str();
    let handle = sftp
        .open(path, OpenFlags::READ, FileAttributes::default())
        .await
        .map_err(sftp_err(addr, "open", path))?
        .handle;
    let writer = match read_all(conn, gw, &handle, path, listed, verify).await {
        Ok(w) => w,
        Err(e) => {
            let _ = sftp.close(handle).await;
            return Err(e);
        }
    };
    // The file must not have changed while it was read: its stat now, while
    // the bytes are made durable.
    let (committed, _, after) = tokio::join!(writer.commit(), sftp.close(handle), sftp.stat(path));
    let fail = |message: String| PullError::Download {
        addr: addr.to_string(),
        path: path.to_string(),
        message,
    };
    let (stored, verified) = committed.map_err(|e| match e {
        WriteBehindError::Store(e) => PullError::Store(e),
        WriteBehindError::Stopped(why) => fail(format!("writer stopped: {why}")),
    })?;
    let after = after.map_err(sftp_err(addr, "stat", path))?.attrs;
    let now = Listed {
        size: after.size.unwrap_or(0),
        mtime: i64::from(after.mtime.unwrap_or(0)),
    };
    if now != listed || stored.size != listed.size {
        return Err(fail(format!(
            "changed while being read (listed {} bytes, mtime {}; read {} bytes; now {} bytes, mtime {}); discarded",
            listed.size, listed.mtime, stored.size, now.size, now.mtime
        )));
    }
    Ok((stored, verified))
}

/// Read the whole file through `handle` into a writer (not committed yet).
/// The listed size is read; the handle's stat must say the same, and a
/// read at that size must find the end of the file. Both are asked along
/// with the first reads, not before them.
async fn read_all(
    conn: &SftpConnection,
    gw: &Gateway,
    handle: &str,
    path: &str,
    listed: Listed,
    verify: Option<(&str, &str)>,
) -> Result<WriteBehind, PullError> {
    let sftp = conn.sftp.clone();
    let addr = conn.addr.as_str();
    let size = listed.size;
    let fail = |message: String| PullError::Download {
        addr: addr.to_string(),
        path: path.to_string(),
        message,
    };
    let incoming = gw.store.begin()?;
    let writer = WriteBehind::start(match verify {
        Some((partner, name)) => gw.arriving(incoming, partner, name),
        None => Arriving::plain(incoming),
    })
    .map_err(|e| fail(format!("cannot start its writer: {e}")))?;
    let same_size = async {
        let now = sftp
            .fstat(handle)
            .await
            .map_err(sftp_err(addr, "stat", path))?
            .attrs
            .size
            .unwrap_or(0);
        if now != size {
            return Err(fail(format!(
                "size changed since listing ({size} → {now} bytes)"
            )));
        }
        Ok(())
    };
    // The file must end where its stat said: a read there finds nothing.
    let ends = async {
        match sftp.read(handle, size, 1).await {
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => Ok(()),
            Ok(d) if d.data.is_empty() => Ok(()),
            Ok(_) => Err(fail(format!("longer than the {size} bytes its stat said"))),
            Err(e) => Err(sftp_err(addr, "read", path)(e)),
        }
    };
    let body = async {
        let len = u64::from(conn.read_len);
        let mut offsets = (0..size).step_by(len as usize);
        let mut reads = futures::stream::FuturesOrdered::new();
        let (started, mut received, mut window) = (Instant::now(), 0u64, 1usize);
        loop {
            while reads.len() < window
                && let Some(offset) = offsets.next()
            {
                let sftp = sftp.clone();
                let want = len.min(size - offset) as u32;
                reads.push_back(
                    async move { (offset, want, sftp.read(handle, offset, want).await) },
                );
            }
            let Some((offset, want, data)) = reads.next().await else {
                return Ok(());
            };
            let mut data = match data {
                Ok(d) => d.data,
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                    return Err(fail(format!("ended at byte {offset} of {size}")));
                }
                Err(e) => return Err(sftp_err(addr, "read", path)(e)),
            };
            // A server may answer with fewer bytes than asked: fetch the rest
            // before moving on, so blocks stay in order.
            while (data.len() as u64) < u64::from(want) {
                let at = offset + data.len() as u64;
                match sftp.read(handle, at, want - data.len() as u32).await {
                    Ok(more) if !more.data.is_empty() => data.extend_from_slice(&more.data),
                    Ok(_) => return Err(fail(format!("ended at byte {at} of {size}"))),
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                        return Err(fail(format!("ended at byte {at} of {size}")));
                    }
                    Err(e) => return Err(sftp_err(addr, "read", path)(e)),
                }
            }
            received += data.len() as u64;
            window = reads_in_flight(received, started.elapsed(), conn.io_timeout, len);
            if !writer.write(data).await {
                return Err(fail("writer stopped before the end".into()));
            }
        }
    };
    if let Err(e) = tokio::try_join!(same_size, ends, body) {
        // The writer gave up first (a full disk): its error is the one to report.
        if writer.stopped()
            && let Err(WriteBehindError::Store(e)) = writer.finish().await
        {
            return Err(e.into());
        }
        return Err(e);
    }
    Ok(writer)
}

/// Encode an SSH string (u32 length, bytes).
fn ssh_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Rename with replace semantics (`posix-rename@openssh.com`): plain SFTP
/// v3 rename fails when the target exists (a partner re-sent a name). A
/// server without the extension gets the plain rename.
async fn posix_rename(conn: &SftpConnection, from: &str, to: &str) -> Result<(), PullError> {
    if !conn.posix_rename {
        conn.sftp
            .rename(from, to)
            .await
            .map_err(sftp_err(&conn.addr, "rename", from))?;
        return Ok(());
    }
    let mut data = Vec::new();
    ssh_string(&mut data, from);
    ssh_string(&mut data, to);
    let reply = conn
        .sftp
        .extended("posix-rename@openssh.com", data)
        .await
        .map_err(sftp_err(&conn.addr, "rename", from))?;
    match reply {
        russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
        // Advertised but not implemented (some servers announce what their
        // configuration then refuses): the plain rename still archives.
        russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::OpUnsupported => {
            tracing::debug!(addr = %conn.addr, "posix-rename@openssh.com answered unsupported; plain rename");
            conn.sftp
                .rename(from, to)
                .await
                .map_err(sftp_err(&conn.addr, "rename", from))?;
            Ok(())
        }
        russh_sftp::protocol::Packet::Status(s) => Err(PullError::Sftp {
            addr: conn.addr.clone(),
            op: "rename",
            path: format!("{from} → {to}"),
            source: SftpError::Status(s),
        }),
        _ => Err(PullError::Sftp {
            addr: conn.addr.clone(),
            op: "rename",
            path: from.to_string(),
            source: SftpError::UnexpectedPacket,
        }),
    }
}

/// Archive, delete or leave the data file, its control file and its marker.
/// Runs only after the file is recorded in the ledger.
async fn after_pickup(
    conn: &SftpConnection,
    ep: &Endpoint,
    c: &Candidate,
) -> Result<(), PullError> {
    // The marker first: should a later step fail, the data file left behind
    // waits for a new marker instead of a stale marker vouching for the next
    // upload of the same name.
    let names: Vec<&str> = c
        .marker
        .as_deref()
        .into_iter()
        .chain(std::iter::once(c.name.as_str()))
        .chain(c.sidecar.as_ref().map(|(s, _)| s.as_str()))
        .collect();
    match &ep.after_pickup {
        AfterPickup::Leave => Ok(()),
        AfterPickup::Delete => {
            for n in names {
                let path = remote_path(&ep.remote_dir, n);
                conn.sftp
                    .remove(path.as_str())
                    .await
                    .map_err(sftp_err(&conn.addr, "delete", &path))?;
            }
            Ok(())
        }
        AfterPickup::Archive(dir) => {
            for n in names {
                let from = remote_path(&ep.remote_dir, n);
                let to = remote_path(dir, n);
                if let Err(e) = posix_rename(conn, &from, &to).await {
                    // The archive directory may not exist yet: create it
                    // once. Another file's action may have just made it
                    // (several are in flight): the rename is tried again
                    // either way.
                    let created = conn
                        .sftp
                        .mkdir(dir.as_str(), FileAttributes::default())
                        .await
                        .is_ok();
                    if let Err(again) = posix_rename(conn, &from, &to).await {
                        return Err(if created { again } else { e });
                    }
                }
            }
            Ok(())
        }
    }
}

/// Run an endpoint's schedule until `stop` turns true. Each pickup's
/// failure is logged and never stops this or any other endpoint.
pub async fn run_schedule(
    gw: Arc<Gateway>,
    partner: String,
    endpoint: String,
    mut stop: watch::Receiver<bool>,
) {
    let Some(ep) = gw
        .config
        .partner(&partner)
        .and_then(|p| p.endpoints.iter().find(|e| e.name == endpoint))
        .cloned()
    else {
        return;
    };
    let Some(schedule) = ep.schedule.clone() else {
        return;
    };
    let tz = gw.config.timezone;
    let lease = Lease::new(
        &gw.ledger,
        format!("pickup:{partner}/{endpoint}"),
        gw.config.lease,
    );
    loop {
        let now = chrono::Utc::now().with_timezone(&tz);
        let next = match schedule.cron.find_next_occurrence(&now, false) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(partner = %partner, endpoint = %endpoint, schedule = %schedule.text, error = %e, "schedule has no next run; endpoint stopped");
                return;
            }
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tracing::debug!(partner = %partner, endpoint = %endpoint, next = %next, "next pickup");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = crate::cluster::stopped(&mut stop) => {
                lease.release().await;
                return;
            }
        }
        // One node at a time picks up from an endpoint.
        match lease.hold().await {
            Ok(Some(_)) => {}
            Ok(None) => continue,
            Err(e) => {
                let e = gw.ledger.diagnose(e).await;
                tracing::error!(partner = %partner, endpoint = %endpoint, error = %e, "cannot take the pickup lease; pickup skipped");
                continue;
            }
        }
        // Shutdown abandons a pickup in progress: a partial download is
        // discarded, a file recorded but not judged is judged at the next
        // start (or by another node), and a remote file is only archived
        // after it was recorded.
        let result = tokio::select! {
            mut r = pull_under(&gw, &partner, &endpoint, Some(&lease)) => match r.error.take() {
                Some(e) => Err(e),
                None => Ok(r),
            },
            _ = crate::cluster::stopped(&mut stop) => {
                tracing::warn!(partner = %partner, endpoint = %endpoint, "pickup abandoned by shutdown");
                lease.release().await;
                return;
            }
        };
        match &result {
            Ok(_) => gw.telemetry.endpoint_succeeded(&partner, &endpoint),
            Err(_) => gw.telemetry.endpoint_failed(&partner, &endpoint),
        }
        match result {
            Ok(r) => {
                if !r.taken.is_empty() || !r.waiting.is_empty() {
                    tracing::info!(partner = %partner, endpoint = %endpoint, taken = r.taken.len(), waiting = r.waiting.len(), attempts = r.attempts, "pickup done");
                }
            }
            Err(e) => {
                let e = match e {
                    PullError::Intake { path, source } => PullError::Intake {
                        path,
                        source: gw.explain(source).await,
                    },
                    PullError::Ledger(l) => PullError::Ledger(gw.ledger.diagnose(l).await),
                    other => other,
                };
                tracing::error!(partner = %partner, endpoint = %endpoint, error = %e, "pickup failed");
            }
        }
        let stopping = *stop.borrow();
        if stopping {
            lease.release().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_flight_follow_what_the_link_carries() {
        let read = 255 * 1024;
        let minute = Duration::from_secs(60);
        // Nothing received yet: one read.
        assert_eq!(reads_in_flight(0, Duration::ZERO, minute, read), 1);
        // 100 MB/s: the full window.
        let fast = reads_in_flight(100_000_000, Duration::from_secs(1), minute, read);
        assert_eq!(fast, READS_IN_FLIGHT);
        // 200 KB/s and a 60 s timeout: 6 MB in half the timeout, 22 reads.
        let slow = reads_in_flight(2_000_000, Duration::from_secs(10), minute, read);
        assert_eq!(slow, 22);
        // The replies queued behind each other arrive within half the timeout.
        let queued = slow as f64 * read as f64 / 200_000.0;
        assert!(queued <= 30.0, "{queued}");
        // Slower than one read per half timeout: still one.
        assert_eq!(
            reads_in_flight(10_000, Duration::from_secs(10), minute, read),
            1
        );
    }

    fn listing(entries: &[(&str, u64, i64)]) -> Listing {
        entries
            .iter()
            .map(|(n, size, mtime)| {
                (
                    n.to_string(),
                    Listed {
                        size: *size,
                        mtime: *mtime,
                    },
                )
            })
            .collect()
    }

    fn names(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn stability_rule_takes_only_unchanged_files() {
        let first = listing(&[("a.dat", 10, 1), ("b.dat", 10, 1), ("c.dat", 5, 1)]);
        let second = listing(&[("a.dat", 10, 1), ("b.dat", 20, 2), ("d.dat", 1, 1)]);
        let pairs = vec![
            ("a.dat".to_string(), None),
            ("b.dat".to_string(), None),
            ("c.dat".to_string(), None),
        ];
        let rule = Completion::Stable(Duration::from_secs(5));
        let (take, waiting) = complete_files(&first, Some(&second), &rule, &pairs);
        assert_eq!(names(&take), ["a.dat"]);
        assert_eq!(waiting, ["b.dat", "c.dat"]);
        // Without a second listing nothing is known to be stable.
        let (take, _) = complete_files(&first, None, &rule, &pairs);
        assert!(take.is_empty());
    }

    #[test]
    fn done_marker_rule_needs_the_marker() {
        let first = listing(&[("a.dat", 10, 1), ("a.dat.done", 0, 1), ("b.dat", 10, 1)]);
        let pairs = vec![("a.dat".to_string(), None), ("b.dat".to_string(), None)];
        let rule = Completion::DoneMarker(".done".into());
        let (take, waiting) = complete_files(&first, None, &rule, &pairs);
        assert_eq!(names(&take), ["a.dat"]);
        assert_eq!(take[0].marker.as_deref(), Some("a.dat.done"));
        assert_eq!(waiting, ["b.dat"]);
    }

    #[test]
    fn a_marker_older_than_its_file_is_stale() {
        let first = listing(&[("a.dat", 10, 5), ("a.dat.done", 0, 4)]);
        let pairs = vec![("a.dat".to_string(), None)];
        let rule = Completion::DoneMarker(".done".into());
        let (take, waiting) = complete_files(&first, None, &rule, &pairs);
        assert!(take.is_empty());
        assert_eq!(waiting, ["a.dat"]);
    }

    #[test]
    fn a_control_file_must_be_settled_too() {
        let first = listing(&[("x.csv", 10, 1), ("x.ctl", 3, 1)]);
        let moving = listing(&[("x.csv", 10, 1), ("x.ctl", 4, 2)]);
        let pairs = vec![("x.csv".to_string(), Some("x.ctl".to_string()))];
        let rule = Completion::Stable(Duration::ZERO);
        let (take, waiting) = complete_files(&first, Some(&moving), &rule, &pairs);
        assert!(take.is_empty());
        assert_eq!(waiting, ["x.csv"]);
        let (take, _) = complete_files(&first, Some(&first), &rule, &pairs);
        assert_eq!(
            take[0].sidecar,
            Some(("x.ctl".to_string(), Listed { size: 3, mtime: 1 }))
        );
    }

    #[test]
    fn remote_paths() {
        assert_eq!(remote_path(".", "a"), "a");
        assert_eq!(remote_path("/out/", "a"), "/out/a");
        assert_eq!(remote_path("out", "a"), "out/a");
    }

    #[test]
    fn ssh_strings() {
        let mut v = Vec::new();
        ssh_string(&mut v, "ab");
        assert_eq!(v, [0, 0, 0, 2, b'a', b'b']);
    }
}
