//! What happens to an upload once the client closes it: the thin adapter
//! between the SFTP session and the one intake path.
//!
//! Uploads are written to temp files in `<data_dir>/sftp/spool/<partner>/`
//! (never into the content store directly). A complete upload goes through
//! the intake with channel `sftp-push` — staged and recorded before the close
//! is answered, judged within the verdict wait — and judging writes its
//! receipt to `<data_dir>/receipts/<partner>/<name>.verdict` (the same
//! directory the watched folders use, shown to the partner as `/receipts`).
//!
//! Formats with a control file (pg-settlement-csv): the data file and its
//! `.ctl` may come in either order, in one session or several. The first is
//! held (fsynced) in `<spool>/<partner>/held/` — listed in the partner's
//! `/inbox` — until the other arrives; then both are taken together. With
//! the content store in the ledger's database (several nodes), the first
//! half is stored there and held in the ledger instead (`held_uploads`), so
//! the pair is completed on whichever node the second half comes to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identify;
use crate::intake::{
    Arrival, Arriving, Bytes, Gateway, IntakeError, Outcome, Verified, blocking, receipt,
};
use crate::ledger::{HeldUpload, LedgerError, Pairing};
use crate::model::Channel;
use crate::stage::{StoreError, Stored};

/// One half of what is taken: the upload just closed, or a file held in
/// the spool for its counterpart.
enum Piece {
    Upload(Box<Arriving>),
    Held(PathBuf),
    /// Already in the content store (a half held in the ledger).
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
    /// The gateway new uploads go to; a reload swaps it (same store and
    /// ledger, new partners and formats).
    gw: std::sync::RwLock<Arc<Gateway>>,
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
            gw: std::sync::RwLock::new(gw),
            spool: data.join("sftp").join("spool"),
            data_dir: data.clone(),
            pairing: Mutex::new(HashMap::new()),
            inflight: Arc::new(tokio::sync::RwLock::new(())),
            stopping: AtomicBool::new(false),
            verdict_wait,
        }
    }

    /// The current gateway.
    pub fn gw(&self) -> Arc<Gateway> {
        self.gw.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Send new uploads to `gw` (a reload).
    pub fn set_gw(&self, gw: Arc<Gateway>) {
        *self.gw.write().unwrap_or_else(|e| e.into_inner()) = gw;
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
    /// partial uploads a process that died left behind (never recorded,
    /// never acknowledged: the client saw no successful close). A live
    /// process holds its uploads locked (another gateway sharing this data
    /// dir may be receiving one right now): those stay.
    pub fn prepare(&self, partner: &str) -> Result<usize, UploadError> {
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
        crate::stage::remove_abandoned(&dirs[0], ".upload-").map_err(|source| UploadError::Io {
            path: dirs[0].clone(),
            source,
        })
    }

    /// A new upload named `name` in the partner's spool, written through
    /// the store's hashing writer (removed when dropped uncommitted) and
    /// verified on the way in. One under a temporary name is verified when
    /// judged, under the name it is given then.
    pub fn new_upload(&self, partner: &str, name: &str) -> Result<Arriving, StoreError> {
        let gw = self.gw();
        let incoming = gw
            .store
            .begin_in(&self.spool_dir(partner), ".upload-", "")?;
        Ok(if crate::channels::watch::is_temporary(name) {
            Arriving::plain(incoming)
        } else {
            gw.arriving(incoming, partner, name)
        })
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
        upload: Arriving,
    ) -> Result<Completion, UploadError> {
        let inflight: Inflight = Arc::new(self.inflight.clone().read_owned().await);
        if self.stopping.load(Ordering::SeqCst) {
            return Err(UploadError::ShuttingDown);
        }
        let gw = &self.gw();
        let Some(partner) = gw.config.partner(&peer.partner) else {
            return Err(IntakeError::UnknownPartner(peer.partner.clone()).into());
        };
        let is_control = identify::is_control_file(&gw.formats, partner, name);
        let wanted = identify::control_file_name(&gw.formats, partner, name);
        if !is_control && wanted.is_none() {
            // The common case: a file that stands alone.
            return self
                .take(
                    &inflight,
                    peer,
                    name,
                    Piece::Upload(Box::new(upload)),
                    None,
                    Vec::new(),
                )
                .await;
        }
        if gw.store.in_database() {
            return self
                .pair_in_ledger(&inflight, peer, name, upload, is_control, wanted)
                .await;
        }
        // Hold-or-take decisions of one partner are made one at a time.
        let lock = self.pairing_lock(&peer.partner);
        let _pairing = lock.lock().await;
        let held = self.held(&peer.partner);
        let held_path = |n: &str| self.held_dir(&peer.partner).join(n);
        if is_control {
            // The data file it belongs to, if it is already here.
            let data = held
                .iter()
                .map(|(n, _)| n)
                .find(|n| identify::controls(&gw.formats, partner, n, name));
            match data {
                Some(d) => {
                    let d = d.clone();
                    self.take(
                        &inflight,
                        peer,
                        &d,
                        Piece::Held(held_path(&d)),
                        Some(Piece::Upload(Box::new(upload))),
                        Vec::new(),
                    )
                    .await
                }
                None => {
                    self.hold(&inflight, peer, name, upload, "its data file".into())
                        .await
                }
            }
        } else {
            let w = wanted.unwrap_or_default();
            match held.iter().find(|(n, _)| n.eq_ignore_ascii_case(&w)) {
                Some((ctl, _)) => {
                    self.take(
                        &inflight,
                        peer,
                        name,
                        Piece::Upload(Box::new(upload)),
                        Some(Piece::Held(held_path(ctl))),
                        Vec::new(),
                    )
                    .await
                }
                None => self.hold(&inflight, peer, name, upload, w).await,
            }
        }
    }

    /// Pair a half through the ledger (the content store is shared by
    /// every node): the upload goes into the store, then the ledger holds
    /// it or hands out its counterpart, whichever node that came to.
    async fn pair_in_ledger(
        self: &Arc<Self>,
        inflight: &Inflight,
        peer: &Peer,
        name: &str,
        upload: Arriving,
        is_control: bool,
        wanted: Option<String>,
    ) -> Result<Completion, UploadError> {
        let gw = self.gw();
        let Some(partner) = gw.config.partner(&peer.partner) else {
            return Err(IntakeError::UnknownPartner(peer.partner.clone()).into());
        };
        // A half of a pair is verified from the store with its counterpart.
        let (stored, _) = self.store(Piece::Upload(Box::new(upload))).await?;
        let waiting_for = match (&wanted, is_control) {
            (Some(w), false) => w.clone(),
            _ => "its data file".to_string(),
        };
        let as_stored = |h: &HeldUpload| Stored {
            checksum: h.checksum.clone(),
            size: h.size,
            path: gw.store.path_of(&h.checksum),
        };
        // Each pass either completes the pair, holds this half, or takes an
        // earlier held half of the same name alone; a held half another
        // node's arrival took in the meantime sends it round again.
        loop {
            let pairing = gw
                .ledger
                .pair_upload(
                    &peer.partner,
                    name,
                    &stored.checksum,
                    stored.size,
                    gw.clock.now(),
                    |held| {
                        held.iter()
                            .find(|h| {
                                if is_control {
                                    identify::controls(&gw.formats, partner, &h.name, name)
                                } else {
                                    wanted
                                        .as_deref()
                                        .is_some_and(|w| h.name.eq_ignore_ascii_case(w))
                                }
                            })
                            .map(|h| h.name.clone())
                    },
                )
                .await
                .map_err(IntakeError::from)?;
            match pairing {
                Pairing::Complete(other) => {
                    let (data_name, data, control) = if is_control {
                        (other.name.clone(), as_stored(&other), stored.clone())
                    } else {
                        (name.to_string(), stored.clone(), as_stored(&other))
                    };
                    match self
                        .take(
                            inflight,
                            peer,
                            &data_name,
                            Piece::Stored(data),
                            Some(Piece::Stored(control)),
                            vec![other],
                        )
                        .await
                    {
                        Err(e) if held_gone(&e) => continue,
                        taken => return taken,
                    }
                }
                Pairing::Occupied(earlier) => {
                    tracing::warn!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), "a held upload is replaced by a new one of the same name; the held one is taken alone");
                    let alone = Piece::Stored(as_stored(&earlier));
                    let earlier_name = earlier.name.clone();
                    match self
                        .take(inflight, peer, &earlier_name, alone, None, vec![earlier])
                        .await
                    {
                        Err(e) if !held_gone(&e) => return Err(e),
                        _ => continue,
                    }
                }
                Pairing::Held => {
                    tracing::info!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), waiting_for = %waiting_for.escape_debug(), "upload held until its counterpart arrives (on any node)");
                    return Ok(Completion::Held { waiting_for });
                }
            }
        }
    }

    /// Put a piece in the content store: an upload by rename (it was hashed
    /// on the way in; with its facts when it was verified there too), a held
    /// file by copy.
    async fn store(&self, piece: Piece) -> Result<(Stored, Option<Verified>), IntakeError> {
        let store = self.gw().store.clone();
        blocking(move || match piece {
            Piece::Upload(upload) => upload.commit(),
            Piece::Held(path) => store.put_file(&path).map(|s| (s, None)),
            Piece::Stored(s) => Ok((s, None)),
        })
        .await
    }

    /// Keep an upload durably until its counterpart arrives.
    async fn hold(
        self: &Arc<Self>,
        inflight: &Inflight,
        peer: &Peer,
        name: &str,
        upload: Arriving,
        waiting_for: String,
    ) -> Result<Completion, UploadError> {
        let dest = self.held_dir(&peer.partner).join(name);
        if dest.exists() {
            // Every arrival is kept: the earlier upload of this name is
            // taken alone (judged without its counterpart) before the new
            // one takes its place.
            tracing::warn!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), "a held upload is replaced by a new one of the same name; the held one is taken alone");
            self.take(
                inflight,
                peer,
                name,
                Piece::Held(dest.clone()),
                None,
                Vec::new(),
            )
            .await?;
        }
        let d = dest.clone();
        blocking(move || upload.persist_at(&d))
            .await
            .map_err(UploadError::Intake)?;
        tracing::info!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), waiting_for = %waiting_for.escape_debug(), "upload held until its counterpart arrives");
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
        data: Piece,
        control: Option<Piece>,
        takes_held: Vec<HeldUpload>,
    ) -> Result<Completion, UploadError> {
        let actor = format!("{}:{}", Channel::SftpPush, peer.user);
        let mut arrival = Arrival::new(&peer.partner, Channel::SftpPush, name, &actor);
        arrival.takes_held = takes_held;
        arrival.endpoint = Some(peer.user.clone());
        arrival.source_path = Some(format!("/inbox/{name}"));
        let held: Vec<PathBuf> = [Some(&data), control.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Held(path) => Some(path.clone()),
                Piece::Upload(_) | Piece::Stored(_) => None,
            })
            .collect();
        let staged = async {
            let (data, verified) = self.store(data).await?;
            let control = match control {
                Some(c) => Some(self.store(c).await?.0),
                None => None,
            };
            let bytes = Bytes::Stored {
                data: &data,
                control: control.as_ref(),
            };
            let id = self.gw().record(&arrival, bytes).await?;
            Ok::<_, IntakeError>((id, verified))
        }
        .await;
        let (file_id, verified) = match staged {
            Ok(staged) => staged,
            Err(IntakeError::Ledger(LedgerError::HeldGone(held))) => {
                tracing::info!(partner = %peer.partner, name = %name.escape_debug(), held = %held.escape_debug(), "the held half was taken by another arrival; offering this one again");
                return Err(IntakeError::Ledger(LedgerError::HeldGone(held)).into());
            }
            Err(e) => {
                let e = self.gw().explain(e).await;
                tracing::error!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), error = %e, "upload could not be stored; nothing recorded");
                return Err(e.into());
            }
        };
        // Staged and recorded: the spool copies are no longer needed.
        for p in held {
            if let Err(e) = std::fs::remove_file(&p)
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
            match me.gw().judge_verified(file_id, &actor, verified).await {
                Ok(out) => {
                    tracing::info!(
                        partner = %peer.partner, user = %peer.user, addr = %peer.addr, file_id,
                        name = %name.escape_debug(), verdict = %out.verdict, reason = %out.reason, "upload taken"
                    );
                    Some(out)
                }
                Err(e) => {
                    tracing::error!(partner = %peer.partner, file_id, name = %name.escape_debug(), error = %e, "upload stored and recorded, but not judged; it is judged at the next start (or `settlegate recover`)");
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

/// Whether a take failed only because a held half it was to take is gone.
fn held_gone(e: &UploadError) -> bool {
    matches!(
        e,
        UploadError::Intake(IntakeError::Ledger(LedgerError::HeldGone(_)))
    )
}
