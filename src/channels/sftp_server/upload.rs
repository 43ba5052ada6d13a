//! What happens to an upload once the client closes it: the thin adapter
//! between the SFTP session and the one intake path.
//!
//! Uploads are written to temp files in `<data_dir>/sftp/spool/<partner>/`
//! (never into the content store directly). A complete upload goes through
//! [`Gateway::intake_file`] with channel `sftp-push` — staged, recorded and
//! judged before the close is answered — then its receipt is written to
//! `<data_dir>/receipts/<partner>/<name>.verdict` (the same directory the
//! watched folders use, shown to the partner as `/receipts`) and the spool
//! file is removed.
//!
//! Formats with a control file (pg-settlement-csv): the data file and its
//! `.ctl` may come in either order, in one session or several. The first is
//! held (fsynced) in `<spool>/<partner>/held/` — listed in the partner's
//! `/inbox` — until the other arrives; then both are taken together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::NamedTempFile;

use crate::stage::{StoreError, Stored};

use crate::channels::receipt;
use crate::intake::{Arrival, Gateway, IntakeError, Outcome, choose_format};

/// The channel name recorded for uploads.
pub const CHANNEL: &str = "sftp-push";

/// A complete upload in the spool, with its SHA-256 when the channel could
/// compute it on the way in (writes in order).
pub struct Spooled {
    pub tmp: NamedTempFile,
    pub checksum: Option<String>,
}

/// Where the bytes to take are.
enum TakeFrom<'a> {
    /// A file to copy into the store.
    Path(&'a Path),
    /// Already in the store (a file that stands alone: no sidecar).
    Stored(Stored),
}

/// Who is uploading.
#[derive(Debug, Clone)]
pub struct Peer {
    pub partner: String,
    pub user: String,
    pub addr: SocketAddr,
}

/// What became of a closed upload.
#[derive(Debug)]
pub enum Completion {
    /// Staged, recorded and judged; the receipt is written.
    Judged(Box<Outcome>),
    /// Staged and recorded. `judging`: its verdict did not come within the
    /// verdict wait and follows in its receipt; otherwise judging failed and
    /// `serve` judges it at its next start (`settlegate recover` too).
    Recorded { file_id: i64, judging: bool },
    /// Kept in the spool until its counterpart (data file or control file) arrives.
    Held { waiting_for: String },
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the gateway is shutting down; upload again later")]
    ShuttingDown,
    #[error("could not store the upload: {0}")]
    Intake(#[from] IntakeError),
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Shared by every session of one server.
pub struct Uploads {
    pub gw: Arc<Gateway>,
    spool: PathBuf,
    data_dir: PathBuf,
    /// Serialises pairing decisions (hold or take) per partner.
    pairing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Completions in progress (and their judging, also when it outlives
    /// the close) hold a read guard; shutdown takes the write guard, so it
    /// waits for them to finish.
    inflight: Arc<tokio::sync::RwLock<()>>,
    stopping: AtomicBool,
    /// How long a close waits for the verdict after staging and recording.
    verdict_wait: Duration,
}

type Inflight = Arc<tokio::sync::OwnedRwLockReadGuard<()>>;

impl Uploads {
    pub fn new(gw: Arc<Gateway>, verdict_wait: Duration) -> Uploads {
        let data = gw.config.data_dir.clone();
        Uploads {
            gw,
            spool: data.join("sftp").join("spool"),
            data_dir: data.clone(),
            pairing: Mutex::new(HashMap::new()),
            inflight: Arc::new(tokio::sync::RwLock::new(())),
            stopping: AtomicBool::new(false),
            verdict_wait,
        }
    }

    pub fn spool_dir(&self, partner: &str) -> PathBuf {
        self.spool.join(partner)
    }

    fn held_dir(&self, partner: &str) -> PathBuf {
        self.spool_dir(partner).join("held")
    }

    pub fn receipts_dir(&self, partner: &str) -> PathBuf {
        receipt::dir(&self.data_dir, partner)
    }

    /// Create the partner's spool and receipts directories and remove
    /// partial uploads a previous run left behind (never recorded, never
    /// acknowledged: the client saw no successful close). Only files not
    /// written for `stale_after` are removed: another gateway process
    /// sharing this data dir may be receiving one right now.
    pub fn prepare(&self, partner: &str, stale_after: Duration) -> Result<usize, UploadError> {
        let dirs = [
            self.spool_dir(partner),
            self.held_dir(partner),
            self.receipts_dir(partner),
        ];
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|source| UploadError::Io {
                path: d.clone(),
                source,
            })?;
        }
        let mut removed = 0;
        if let Ok(entries) = std::fs::read_dir(&dirs[0]) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= stale_after);
                if stale
                    && e.file_name().to_string_lossy().starts_with(".upload-")
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// A new temp file for an upload (removed when dropped).
    pub fn new_temp(&self, partner: &str) -> std::io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(self.spool_dir(partner))
    }

    /// Files held for their counterpart: (name, size, mtime).
    pub fn held(&self, partner: &str) -> Vec<(String, std::fs::Metadata)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.held_dir(partner)) {
            for e in entries.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                if let Ok(meta) = e.metadata()
                    && meta.is_file()
                {
                    out.push((name, meta));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Stop taking completions and wait for those in progress.
    pub async fn drain(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _all = self.inflight.write().await;
    }

    fn pairing_lock(&self, partner: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.pairing.lock() {
            Ok(mut m) => m.entry(partner.to_string()).or_default().clone(),
            // A poisoned map only loses the serialisation of pairing.
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A complete upload named `name` (already checked by the path jail).
    pub async fn complete(
        self: &Arc<Self>,
        peer: &Peer,
        name: &str,
        spooled: Spooled,
    ) -> Result<Completion, UploadError> {
        let Spooled { tmp, checksum } = spooled;
        let inflight: Inflight = Arc::new(self.inflight.clone().read_owned().await);
        if self.stopping.load(Ordering::SeqCst) {
            return Err(UploadError::ShuttingDown);
        }
        let gw = &self.gw;
        let Some(partner) = gw.config.partner(&peer.partner) else {
            return Err(IntakeError::UnknownPartner(peer.partner.clone()).into());
        };
        let is_control = crate::channels::is_control_file(&gw.formats, partner, name);
        let wanted = choose_format(&gw.formats, partner, name)
            .ok()
            .and_then(|s| s.sidecar_name(name));
        if !is_control && wanted.is_none() {
            // The common case: a file that stands alone. Hashed on the way
            // in, it moves into the store by rename instead of a copy.
            let from = match checksum {
                Some(sum) => match self.adopt(tmp, sum).await {
                    Ok(stored) => TakeFrom::Stored(stored),
                    Err(e) => {
                        tracing::error!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name, error = %e, "upload could not be stored; nothing recorded");
                        return Err(IntakeError::Store(e).into());
                    }
                },
                None => {
                    return self
                        .take(&inflight, peer, name, TakeFrom::Path(tmp.path()), None, &[])
                        .await;
                }
            };
            return self.take(&inflight, peer, name, from, None, &[]).await;
        }
        // Hold-or-take decisions of one partner are made one at a time.
        let lock = self.pairing_lock(&peer.partner);
        let _pairing = lock.lock().await;
        let held = self.held(&peer.partner);
        if is_control {
            // The data file it belongs to, if it is already here.
            let data = held.iter().map(|(n, _)| n).find(|n| {
                choose_format(&gw.formats, partner, n)
                    .ok()
                    .and_then(|s| s.sidecar_name(n))
                    .is_some_and(|w| w.eq_ignore_ascii_case(name))
            });
            match data {
                Some(d) => {
                    let d = d.clone();
                    let held_path = self.held_dir(&peer.partner).join(&d);
                    self.take(
                        &inflight,
                        peer,
                        &d,
                        TakeFrom::Path(&held_path),
                        Some(tmp.path()),
                        std::slice::from_ref(&held_path),
                    )
                    .await
                }
                None => {
                    self.hold(&inflight, peer, name, tmp, "its data file".into())
                        .await
                }
            }
        } else {
            match wanted {
                None => {
                    self.take(&inflight, peer, name, TakeFrom::Path(tmp.path()), None, &[])
                        .await
                }
                Some(w) => match held.iter().find(|(n, _)| n.eq_ignore_ascii_case(&w)) {
                    Some((ctl, _)) => {
                        let ctl_path = self.held_dir(&peer.partner).join(ctl);
                        self.take(
                            &inflight,
                            peer,
                            name,
                            TakeFrom::Path(tmp.path()),
                            Some(&ctl_path),
                            std::slice::from_ref(&ctl_path),
                        )
                        .await
                    }
                    None => self.hold(&inflight, peer, name, tmp, w).await,
                },
            }
        }
        // `tmp` is dropped here: the spool copy is removed.
    }

    /// Move a spooled upload into the content store under the checksum
    /// computed on the way in (fsync, rename; the spool is on the data dir's
    /// file system, beside the store).
    async fn adopt(&self, tmp: NamedTempFile, checksum: String) -> Result<Stored, StoreError> {
        let store = self.gw.store.clone();
        tokio::task::spawn_blocking(move || store.adopt(tmp, checksum))
            .await
            .map_err(|e| StoreError {
                action: "adopt",
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// Keep an upload durably until its counterpart arrives.
    async fn hold(
        self: &Arc<Self>,
        inflight: &Inflight,
        peer: &Peer,
        name: &str,
        tmp: NamedTempFile,
        waiting_for: String,
    ) -> Result<Completion, UploadError> {
        let dir = self.held_dir(&peer.partner);
        let dest = dir.join(name);
        if dest.exists() {
            // Every arrival is kept: the earlier upload of this name is
            // taken alone (judged without its counterpart) before the new
            // one takes its place.
            tracing::warn!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name, "a held upload is replaced by a new one of the same name; the held one is taken alone");
            self.take(
                inflight,
                peer,
                name,
                TakeFrom::Path(&dest),
                None,
                std::slice::from_ref(&dest),
            )
            .await?;
        }
        let d = dest.clone();
        tokio::task::spawn_blocking(move || {
            tmp.as_file().sync_all()?;
            tmp.persist(&d).map_err(|e| e.error)?;
            std::fs::File::open(d.parent().unwrap_or(Path::new(".")))?.sync_all()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| UploadError::Io {
            path: dest.clone(),
            source,
        })?;
        tracing::info!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name, waiting_for = %waiting_for, "upload held until its counterpart arrives");
        Ok(Completion::Held { waiting_for })
    }

    /// Stage and record, then judge — waiting for the verdict up to the
    /// verdict wait; judging that takes longer goes on in the background and
    /// writes the receipt when done.
    async fn take(
        self: &Arc<Self>,
        inflight: &Inflight,
        peer: &Peer,
        name: &str,
        data: TakeFrom<'_>,
        sidecar: Option<&Path>,
        held: &[PathBuf],
    ) -> Result<Completion, UploadError> {
        let arrival = Arrival {
            partner: peer.partner.clone(),
            channel: CHANNEL.into(),
            endpoint: Some(peer.user.clone()),
            source_path: Some(format!("/inbox/{name}")),
            name: name.to_string(),
            actor: format!("{CHANNEL}:{}", peer.user),
            reason: None,
        };
        let staged = match data {
            TakeFrom::Path(data) => self.gw.stage_file(&arrival, data, sidecar).await,
            // Only files that stand alone are adopted (no sidecar).
            TakeFrom::Stored(stored) => self.gw.record_stored(&arrival, &stored, None, None).await,
        };
        let file_id = match staged {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name, error = %e, "upload could not be stored; nothing recorded");
                return Err(e.into());
            }
        };
        // Staged and recorded: the spool copies are no longer needed.
        for p in held {
            if let Err(e) = std::fs::remove_file(p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "could not remove a held file already staged");
            }
        }
        let (me, peer, name, guard) = (
            self.clone(),
            peer.clone(),
            name.to_string(),
            inflight.clone(),
        );
        let judging = tokio::spawn(async move {
            let _inflight = guard;
            match me.gw.judge_staged(file_id, &arrival).await {
                Ok(out) => {
                    let (dir, n, o) = (me.receipts_dir(&peer.partner), name.clone(), out.clone());
                    match tokio::task::spawn_blocking(move || receipt::write(&dir, &n, &o)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::error!(partner = %peer.partner, file_id, name, error = %e, "judged, but the receipt could not be written")
                        }
                        Err(e) => {
                            tracing::error!(partner = %peer.partner, file_id, name, error = %e, "judged, but the receipt task failed")
                        }
                    }
                    tracing::info!(
                        partner = %peer.partner, user = %peer.user, addr = %peer.addr, file_id,
                        name, verdict = %out.verdict, reason = %out.reason, "upload taken"
                    );
                    Some(out)
                }
                Err(e) => {
                    tracing::error!(partner = %peer.partner, file_id, name, error = %e, "upload stored and recorded, but not judged; it is judged at the next start (or `settlegate recover`)");
                    None
                }
            }
        });
        Ok(
            match tokio::time::timeout(self.verdict_wait, judging).await {
                Ok(Ok(Some(out))) => Completion::Judged(Box::new(out)),
                Ok(_) => Completion::Recorded {
                    file_id,
                    judging: false,
                },
                Err(_) => Completion::Recorded {
                    file_id,
                    judging: true,
                },
            },
        )
    }
}
