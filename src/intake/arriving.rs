//! An arrival a channel streams in piece by piece (an SFTP upload, a
//! download). Its bytes go to the content store's writer and, while they
//! come in order, to the format verifier on a thread of its own: when the
//! last byte is in, the file's facts (checksum included) are known, and
//! judging it reads nothing back. Bytes that do not continue where the last
//! ones ended (pipelined writes landing out of turn, a rewrite) stop the
//! verifier; such a file is hashed and verified from the store instead.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender};

use super::{Gateway, IntakeError};
use crate::format::{FileContext, FileFacts, FormatSpec, Parallelism};
use crate::stage::{Incoming, StoreError, Stored};

/// Pieces queued for the verifier at most (a slow verifier holds the
/// writer back rather than filling memory).
const QUEUED: usize = 4;

/// Bytes gathered into one piece for the verifier: small writes (32 KiB
/// from many SFTP clients) would wake its thread once a write.
const PIECE: usize = 256 * 1024;

/// Writes this large go to the verifier as they are, not gathered.
const LARGE: usize = 64 * 1024;

/// A blob being written into the store, verified on the way in when its
/// format is known. Blocking: use it on a blocking thread.
pub struct Arriving {
    incoming: Incoming,
    verifier: Option<Verifier>,
}

struct Verifier {
    tx: SyncSender<Vec<u8>>,
    /// Bytes handed over: `0..fed`, in order (the last of them, `gathered`,
    /// not yet sent).
    fed: u64,
    gathered: Vec<u8>,
    thread: std::thread::JoinHandle<io::Result<FileFacts>>,
    spec: String,
    name: String,
    generation: u64,
}

/// The facts of an arrival verified on the way in, and what they hold for:
/// the format, the file name and the gateway's configuration they were
/// found under. Judging uses them only when all three still hold (see
/// [`Verified::facts_for`]).
#[derive(Debug, Clone)]
pub struct Verified {
    facts: FileFacts,
    spec: String,
    name: String,
    generation: u64,
}

impl Verified {
    /// The facts, if they are those of `checksum` named `name`, verified as
    /// `spec` under configuration `generation`, with no control file.
    pub(super) fn facts_for(
        self,
        generation: u64,
        spec: &FormatSpec,
        name: &str,
        checksum: &str,
        has_control: bool,
    ) -> Option<FileFacts> {
        (self.generation == generation
            && self.spec == spec.id
            && self.name == name
            && !has_control
            && self.facts.checksum_hex() == checksum)
            .then_some(self.facts)
    }
}

/// The verifier's input: the pieces sent to it, in order, until the sender
/// is gone.
struct Pieces {
    rx: Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.rx.recv() {
                Ok(p) => (self.piece, self.at) = (p, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Verifier {
    fn start(spec: &FormatSpec, name: &str, generation: u64) -> Option<Verifier> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED);
        let (owned, file) = (spec.clone(), name.to_string());
        let thread = std::thread::Builder::new()
            .name("verify-arrival".into())
            .spawn(move || {
                let input = Pieces {
                    rx,
                    piece: Vec::new(),
                    at: 0,
                };
                let ctx = FileContext {
                    name: &file,
                    sidecar: None,
                };
                // In order: the bytes come at the pace of the link, and the
                // workers stay free for files verified from the store.
                crate::format::verify_with(&owned, input, ctx, &mut (), Parallelism::SEQUENTIAL)
            })
            .ok()?;
        Some(Verifier {
            tx,
            fed: 0,
            gathered: Vec::new(),
            thread,
            spec: spec.id.clone(),
            name: name.to_string(),
            generation,
        })
    }

    /// Hand over the next bytes. False when the verifier has stopped.
    fn feed(&mut self, bytes: Vec<u8>) -> bool {
        self.fed += bytes.len() as u64;
        if self.gathered.is_empty() && bytes.len() >= LARGE {
            return self.tx.send(bytes).is_ok();
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(PIECE.max(bytes.len()));
        }
        self.gathered.extend_from_slice(&bytes);
        self.gathered.len() < PIECE || self.tx.send(std::mem::take(&mut self.gathered)).is_ok()
    }

    /// The facts, once every piece is in.
    fn finish(mut self) -> Option<Verified> {
        if !self.gathered.is_empty() {
            // A verifier that stopped early says why from its thread.
            let _ = self.tx.send(std::mem::take(&mut self.gathered));
        }
        drop(self.tx);
        match self.thread.join() {
            Ok(Ok(facts)) => Some(Verified {
                facts,
                spec: self.spec,
                name: self.name,
                generation: self.generation,
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "verifying on the way in failed; verified from the store instead");
                None
            }
            Err(_) => {
                tracing::error!(
                    "the verifier of an arrival stopped; verified from the store instead"
                );
                None
            }
        }
    }
}

impl Gateway {
    /// Write an arrival of `partner` named `name` through `incoming`,
    /// verifying it on the way in when its format is known and needs no
    /// control file (one that does is verified when judged, with it).
    pub fn arriving(&self, mut incoming: Incoming, partner: &str, name: &str) -> Arriving {
        let verifier = self
            .config
            .partner(partner)
            .and_then(|p| crate::identify::choose_format(&self.formats, p, name).ok())
            .filter(|spec| spec.sidecar.is_none())
            .and_then(|spec| Verifier::start(spec, name, self.generation));
        if verifier.is_some() {
            // The verifier hashes every byte it is given: once is enough.
            incoming.hash_elsewhere();
        }
        Arriving { incoming, verifier }
    }
}

impl Gateway {
    /// Stage a file from disk arriving from `partner` as `name`. Into the
    /// database store it is verified as it streams in (reading it back out
    /// of the database would be a second, costlier pass); the directory
    /// store's copy is verified when judged, in parallel, from the page
    /// cache.
    pub async fn stage_file(
        &self,
        path: &std::path::Path,
        partner: &str,
        name: &str,
    ) -> Result<(Stored, Option<Verified>), IntakeError> {
        let verifier = self
            .store
            .in_database()
            .then(|| {
                self.config
                    .partner(partner)
                    .and_then(|p| crate::identify::choose_format(&self.formats, p, name).ok())
                    .filter(|spec| spec.sidecar.is_none())
                    .and_then(|spec| Verifier::start(spec, name, self.generation))
            })
            .flatten();
        let (store, path) = (self.store.clone(), path.to_path_buf());
        super::blocking(move || {
            let Some(v) = verifier else {
                return store.put_file(&path).map(|s| (s, None));
            };
            // The verifier hashes every byte it is given: the store takes
            // its checksum instead of hashing them a second time.
            let verifier = std::sync::Mutex::new(Some(v));
            let mut verified = None;
            let stored = store.put_file_hashed_by(
                &path,
                &mut |piece| {
                    if let Ok(mut v) = verifier.lock()
                        && let Some(live) = v.as_mut()
                        && !live.feed(piece.to_vec())
                    {
                        *v = None;
                    }
                },
                &mut || {
                    let v = verifier.lock().ok()?.take()?;
                    let facts = v.finish()?;
                    let checksum = facts.facts.checksum_hex();
                    verified = Some(facts);
                    Some(checksum)
                },
            )?;
            match stored {
                Some(stored) => Ok((stored, verified)),
                // The verifier stopped early: stored as any file, verified
                // from the store when judged.
                None => store.put_file(&path).map(|s| (s, None)),
            }
        })
        .await
    }
}

/// Writes queued for a [`WriteBehind`] at most (a slow disk holds the
/// network back rather than filling memory): 2 MiB of OpenSSH's 255 KiB
/// writes.
const WRITES_QUEUED: usize = 8;

/// An [`Arriving`] written on a thread of its own: a write is queued (it
/// waits only while the queue is full), so the channel reads on while the
/// disk, the checksum and the verifier work behind it. The first failure
/// stops the writer: later writes say so, and [`WriteBehind::finish`] says
/// why. Dropped unfinished, the writer ends after the writes queued and
/// the bytes are discarded. Its own thread, not tokio's blocking pool: an
/// upload left open idle must not hold a thread other work waits for.
pub struct WriteBehind {
    tx: tokio::sync::mpsc::Sender<(Option<u64>, Vec<u8>)>,
    done: tokio::sync::oneshot::Receiver<Result<Arriving, StoreError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteBehindError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the writer stopped: {0}")]
    Stopped(String),
}

impl WriteBehind {
    /// Start writing `arriving` behind the caller. Fails only when no
    /// thread can be started (the bytes are discarded).
    pub fn start(mut arriving: Arriving) -> io::Result<WriteBehind> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<u64>, Vec<u8>)>(WRITES_QUEUED);
        let (report, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                let written = (|| {
                    while let Some((offset, bytes)) = rx.blocking_recv() {
                        match offset {
                            Some(at) => arriving.write_at(at, bytes)?,
                            None => arriving.write(bytes)?,
                        }
                    }
                    Ok(())
                })();
                // Nobody waiting (the upload was dropped): the bytes go with it.
                let _ = report.send(written.map(|()| arriving));
            })?;
        Ok(WriteBehind { tx, done })
    }

    /// Queue `bytes` for `offset`. False once the writer has stopped.
    pub async fn write_at(&self, offset: u64, bytes: Vec<u8>) -> bool {
        self.tx.send((Some(offset), bytes)).await.is_ok()
    }

    /// Queue `bytes` after the last ones. False once the writer has stopped.
    pub async fn write(&self, bytes: Vec<u8>) -> bool {
        self.tx.send((None, bytes)).await.is_ok()
    }

    /// Whether the writer has stopped (a write failed).
    pub fn stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Wait for every queued write: the arrival, or the first failure.
    pub async fn finish(self) -> Result<Arriving, WriteBehindError> {
        drop(self.tx);
        match self.done.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(WriteBehindError::Stopped(
                "its thread ended without a result".into(),
            )),
        }
    }

    /// Wait for every queued write, then make the blob durable (see
    /// [`Arriving::commit`]).
    pub async fn commit(self) -> Result<(Stored, Option<Verified>), WriteBehindError> {
        let arriving = self.finish().await?;
        match tokio::task::spawn_blocking(move || arriving.commit()).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(WriteBehindError::Stopped(e.to_string())),
        }
    }
}

impl Arriving {
    /// Bytes written through the store's writer alone, verified when judged.
    pub fn plain(incoming: Incoming) -> Arriving {
        Arriving {
            incoming,
            verifier: None,
        }
    }

    /// Append bytes.
    pub fn write(&mut self, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.write_at(self.incoming.size(), bytes)
    }

    /// Write bytes at `offset`.
    pub fn write_at(&mut self, offset: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.incoming.write_at(offset, &bytes)?;
        if let Some(v) = &mut self.verifier {
            if v.fed == offset {
                // A verifier that stopped early leaves the file to be
                // verified from the store.
                if !v.feed(bytes) {
                    self.verifier = None;
                }
            } else {
                // Out of order: the verifier's pass would not be of the
                // file's bytes. It ends with its input; nobody waits for it.
                self.verifier = None;
            }
        }
        Ok(())
    }

    /// Bytes written so far (the end of the furthest write).
    pub fn size(&self) -> u64 {
        self.incoming.size()
    }

    /// Whether the bytes so far are being verified on the way in.
    pub fn verifying(&self) -> bool {
        self.verifier.is_some()
    }

    /// The temp file's metadata.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.incoming.metadata()
    }

    /// Make the blob durable under its checksum; with its facts when it was
    /// verified whole on the way in.
    pub fn commit(self) -> Result<(Stored, Option<Verified>), StoreError> {
        let size = self.incoming.size();
        let verified = self
            .verifier
            .filter(|v| v.fed == size)
            .and_then(Verifier::finish);
        match verified {
            Some(v) => {
                let stored = self.incoming.commit_hashed(v.facts.checksum_hex())?;
                Ok((stored, Some(v)))
            }
            None => Ok((self.incoming.commit()?, None)),
        }
    }

    /// Keep the bytes outside the store, durably at `path` (see
    /// [`Incoming::persist_at`]).
    pub fn persist_at(self, path: &std::path::Path) -> Result<(), StoreError> {
        self.incoming.persist_at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    async fn gateway(dir: &Path) -> Gateway {
        let formats = Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
        let text = format!(
            "data_dir = {:?}\nformats_dir = {:?}\n[[partners]]\nid = \"cardco\"\nformats = [\"card-settlement\"]\n",
            dir.join("data").display().to_string(),
            formats.display().to_string()
        );
        let config =
            crate::config::Config::from_toml(&text, &dir.join("settlegate.toml")).expect("config");
        Gateway::open(config, std::sync::Arc::new(super::super::SystemClock))
            .await
            .expect("gateway")
    }

    fn fixture(case: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/card-settlement")
                .join(case)
                .join("CSTL_031_20261121_0001.dat"),
        )
        .expect("fixture")
    }

    const NAME: &str = "CSTL_031_20261121_0001.dat";

    /// The facts `verify` finds in the bytes.
    fn verified_from(gw: &Gateway, bytes: &[u8]) -> FileFacts {
        let spec = gw.formats.get("card-settlement").expect("spec");
        let ctx = FileContext {
            name: NAME,
            sidecar: None,
        };
        crate::format::verify(spec, bytes, ctx, &mut ()).expect("verify")
    }

    /// Write `bytes` in pieces at the given (offset, len) places.
    fn arrive(gw: &Gateway, bytes: &[u8], pieces: &[(usize, usize)]) -> Arriving {
        let mut a = gw.arriving(gw.store.begin().expect("begin"), "cardco", NAME);
        for &(at, len) in pieces {
            a.write_at(at as u64, bytes[at..at + len].to_vec())
                .expect("write");
        }
        a
    }

    fn in_thirds(len: usize) -> Vec<(usize, usize)> {
        let t = len / 3;
        vec![(0, t), (t, t), (2 * t, len - 2 * t)]
    }

    #[tokio::test]
    async fn bytes_in_order_are_verified_on_the_way_in_as_verify_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        // A valid file and one invalid in its middle: the same facts as a
        // pass over the stored bytes, error and position included.
        for case in ["valid-basic", "bad-digit", "trailer-count-off"] {
            let bytes = fixture(case);
            let a = arrive(&gw, &bytes, &in_thirds(bytes.len()));
            assert!(a.verifying(), "{case}");
            let (stored, verified) = a.commit().expect("commit");
            assert_eq!(
                stored.checksum,
                hex::encode(Sha256::digest(&bytes)),
                "{case}"
            );
            assert_eq!(std::fs::read(&stored.path).expect("blob"), bytes, "{case}");
            let v = verified.expect("verified on the way in");
            assert_eq!(v.facts, verified_from(&gw, &bytes), "{case}");
        }
    }

    #[tokio::test]
    async fn bytes_out_of_order_are_hashed_from_the_file_and_verified_when_judged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        let bytes = fixture("valid-basic");
        let mid = bytes.len() / 2;
        // The second half first, as pipelined writes may land.
        let a = arrive(&gw, &bytes, &[(mid, bytes.len() - mid), (0, mid)]);
        assert!(!a.verifying());
        let (stored, verified) = a.commit().expect("commit");
        assert!(verified.is_none());
        assert_eq!(stored.checksum, hex::encode(Sha256::digest(&bytes)));
        // Written whole, then its first byte again with another: the facts
        // of the first pass are not those of the file.
        let mut a = arrive(&gw, &bytes, &[(0, bytes.len())]);
        a.write_at(0, b"X".to_vec()).expect("rewrite");
        let (stored, verified) = a.commit().expect("commit");
        assert!(verified.is_none());
        let mut changed = bytes.clone();
        changed[0] = b'X';
        assert_eq!(stored.checksum, hex::encode(Sha256::digest(&changed)));
    }

    #[tokio::test]
    async fn facts_hold_only_for_their_file_name_format_and_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        let bytes = fixture("valid-basic");
        let spec = gw.formats.get("card-settlement").expect("spec").clone();
        let (stored, verified) = arrive(&gw, &bytes, &in_thirds(bytes.len()))
            .commit()
            .expect("commit");
        let v = verified.expect("verified");
        let sum = stored.checksum.as_str();
        let g = gw.generation;
        assert!(v.clone().facts_for(g, &spec, NAME, sum, false).is_some());
        assert!(
            v.clone()
                .facts_for(g + 1, &spec, NAME, sum, false)
                .is_none()
        );
        assert!(
            v.clone()
                .facts_for(g, &spec, "CSTL_031_20261121_0002.dat", sum, false)
                .is_none()
        );
        assert!(
            v.clone()
                .facts_for(g, &spec, NAME, &"0".repeat(64), false)
                .is_none()
        );
        assert!(v.clone().facts_for(g, &spec, NAME, sum, true).is_none());
        let mut other = spec.clone();
        other.id = "another-format".into();
        assert!(v.facts_for(g, &other, NAME, sum, false).is_none());
        // A reload is another configuration.
        let reloaded = gw.reconfigured(gw.config.clone(), gw.formats.clone());
        assert_ne!(reloaded.generation, gw.generation);
    }

    #[tokio::test]
    async fn a_file_of_no_known_format_is_not_verified_on_the_way_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gw = gateway(dir.path()).await;
        let a = gw.arriving(gw.store.begin().expect("begin"), "nobody", NAME);
        assert!(!a.verifying());
        let mut a = Arriving::plain(gw.store.begin().expect("begin"));
        a.write(b"abc".to_vec()).expect("write");
        let (stored, verified) = a.commit().expect("commit");
        assert!(verified.is_none());
        assert_eq!(stored.checksum, hex::encode(Sha256::digest(b"abc")));
    }
}
