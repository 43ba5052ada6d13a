//! Stage: the content-addressed store. The exact bytes of every arrival are
//! stored under their SHA-256 before the arrival is recorded or
//! acknowledged. Identical bytes are stored once. Nothing is ever deleted
//! from the store.
//!
//! One interface, two places ([`StoreKind`]): a directory
//! (`<data-dir>/store/<aa>/<sha256>`, or a shared volume; temp file → fsync
//! → rename → fsync of the directory), or the ledger's PostgreSQL database
//! (chunks in `blob_chunks`, see `ledger::blobs`), so several nodes share
//! the bytes with nothing but the database. Either way bytes come in
//! through one hashing writer ([`Incoming`], a temp file under the local
//! root) and go out through one reader ([`Blob`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::ledger::{BLOB_CHUNK, BlobPiece, Ledger, LedgerError};

#[derive(Debug, thiserror::Error)]
#[error("content store: cannot {action} {path}: {source}")]
pub struct StoreError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl StoreError {
    /// A failure reading the input, said of the file it came from.
    fn of_source(mut self, path: &Path) -> StoreError {
        if self.action == "read the arrival into" {
            self.path = path.to_path_buf();
            self.action = "read";
        }
        self
    }
}

/// Where a staged blob lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub checksum: String,
    pub size: u64,
    /// Where the bytes are: a path, or `postgres:blobs/<checksum>`.
    pub path: PathBuf,
}

/// Where the store keeps blobs (`store =` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `<data-dir>/store` (the default).
    DataDir,
    /// A directory elsewhere (a shared volume).
    Directory(PathBuf),
    /// The ledger's PostgreSQL database.
    Postgres,
}

#[derive(Clone)]
pub struct ContentStore {
    /// The directory of blobs, or (database store) of temp files only.
    root: PathBuf,
    /// Shards (a bit per two-hex-digit name) whose entry in the root this
    /// process has synced. It only saves fsyncs: a shard not marked is
    /// synced again, whoever created it.
    synced_shards: Arc<[AtomicU64; 4]>,
    /// Blobs kept in the database instead of under `root`.
    db: Option<Arc<BlobDb>>,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("root", &self.root)
            .field("database", &self.db.is_some())
            .finish()
    }
}

/// The database side of a store: its own connection pool on its own small
/// runtime, so the store's blocking interface can wait on the database
/// from any thread (a blocking pool's or an async one's) without nesting
/// runtimes.
pub struct BlobDb {
    ledger: Ledger,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for BlobDb {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl BlobDb {
    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt.as_ref().map(|r| r.handle())
    }

    /// Run `f` on the store's runtime and wait for it here.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, LedgerError>> + Send + 'static,
    ) -> io::Result<T> {
        let handle = self
            .handle()
            .ok_or_else(|| io::Error::other("the store's database runtime is stopped"))?;
        futures::executor::block_on(handle.spawn(f))
            .map_err(io::Error::other)?
            .map_err(io::Error::other)
    }
}

impl ContentStore {
    fn shard_synced(&self, shard: u8) -> bool {
        let word = &self.synced_shards[usize::from(shard / 64)];
        word.load(Ordering::Acquire) & (1 << (shard % 64)) != 0
    }

    fn mark_shard_synced(&self, shard: u8) {
        self.synced_shards[usize::from(shard / 64)].fetch_or(1 << (shard % 64), Ordering::AcqRel);
    }

    /// Open (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<ContentStore, StoreError> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|source| StoreError {
            action: "create",
            path: tmp.clone(),
            source,
        })?;
        Ok(ContentStore {
            root: root.to_path_buf(),
            synced_shards: Arc::default(),
            db: None,
        })
    }

    /// Open the store in the PostgreSQL database at `url` (the ledger's,
    /// already migrated), with its temp files under `spool`.
    pub async fn open_database(spool: &Path, url: &str) -> Result<ContentStore, StoreError> {
        let mut store = ContentStore::open(spool)?;
        let err = |source: io::Error| StoreError {
            action: "connect to",
            path: PathBuf::from(crate::ledger::redact_url(url)),
            source,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-db")
            .enable_all()
            .build()
            .map_err(err)?;
        let url_owned = url.to_string();
        let data_dir = spool.to_path_buf();
        let ledger = rt
            .handle()
            .spawn(async move { Ledger::connect_only(&url_owned, &data_dir).await })
            .await
            .map_err(|e| err(io::Error::other(e)))?;
        let ledger = match ledger {
            Ok(l) => l,
            Err(e) => {
                rt.shutdown_background();
                return Err(err(io::Error::other(e)));
            }
        };
        store.db = Some(Arc::new(BlobDb {
            ledger,
            rt: Some(rt),
        }));
        Ok(store)
    }

    /// Whether blobs are kept in the database.
    pub fn in_database(&self) -> bool {
        self.db.is_some()
    }

    /// The path of a blob by its hex checksum in the directory store
    /// (two-level fan-out keeps directories small).
    pub fn path_of(&self, checksum: &str) -> PathBuf {
        match &self.db {
            Some(_) => PathBuf::from(format!("postgres:blobs/{checksum}")),
            None => local_path(&self.root, checksum),
        }
    }

    /// Where a blob is, for messages.
    pub fn describe(&self, checksum: &str) -> String {
        self.path_of(checksum).display().to_string()
    }

    /// The size of a stored blob; `None` when it is not in the store.
    pub fn size_of(&self, checksum: &str) -> Result<Option<u64>, StoreError> {
        let err = |source| StoreError {
            action: "look up",
            path: self.path_of(checksum),
            source,
        };
        match &self.db {
            Some(db) => {
                let (ledger, sum) = (db.ledger.clone(), checksum.to_string());
                db.run(async move { ledger.blob_size(&sum).await })
                    .map_err(err)
            }
            None => match std::fs::metadata(self.path_of(checksum)) {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(err(e)),
            },
        }
    }

    /// Open a stored blob for reading: read to its end, it checks the bytes
    /// against `checksum` (a damaged store is an error, never bytes).
    pub fn open_blob(&self, checksum: &str) -> Result<Blob, StoreError> {
        self.open_reader(checksum, true)
    }

    /// [`ContentStore::open_blob`] for a reader that hashes the bytes
    /// itself (the verifier compares its checksum with the recorded one):
    /// not hashed twice.
    pub fn open_blob_unhashed(&self, checksum: &str) -> Result<Blob, StoreError> {
        self.open_reader(checksum, false)
    }

    fn open_reader(&self, checksum: &str, hash: bool) -> Result<Blob, StoreError> {
        let source = match &self.db {
            Some(db) => Source::Db {
                db: db.clone(),
                rx: None,
                chunk: Vec::new(),
                at: 0,
                cached: None,
                size: None,
            },
            None => {
                let path = self.path_of(checksum);
                Source::File(File::open(&path).map_err(|source| StoreError {
                    action: "open",
                    path,
                    source,
                })?)
            }
        };
        Ok(Blob {
            checksum: checksum.to_string(),
            what: self.path_of(checksum),
            source,
            hasher: hash.then(Sha256::new),
            done: false,
        })
    }

    /// Read a stored blob whole (small blobs such as control files).
    pub fn read_blob(&self, checksum: &str) -> Result<Vec<u8>, StoreError> {
        let mut blob = self.open_blob(checksum)?;
        let mut out = Vec::new();
        blob.read_to_end(&mut out).map_err(|source| StoreError {
            action: "read",
            path: self.path_of(checksum),
            source,
        })?;
        Ok(out)
    }

    /// Copy everything from `input` into the store, durably. Returns the
    /// checksum, size and final path. A failure (disk full, read error) leaves
    /// nothing behind but an unlinked temp file.
    pub fn put<R: Read>(&self, mut input: R) -> Result<Stored, StoreError> {
        if let Some(db) = &self.db {
            return self
                .put_streamed(db, input, &mut |_| {}, None)?
                .ok_or_else(|| StoreError {
                    action: "store",
                    path: PathBuf::from("postgres:blobs/(incoming)"),
                    source: io::Error::other("the blob's checksum is unknown"),
                });
        }
        let mut incoming = self.begin()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(incoming.error("read the arrival into", e)),
            };
            incoming.write(&buf[..n])?;
        }
        incoming.commit()
    }

    /// [`ContentStore::put`] into the database: read a chunk at a time
    /// while the store's runtime writes the chunks before (one
    /// transaction); nothing touches this disk. Every byte is handed to
    /// `tap` in order. Hashed here, or, with `caller_checksum`, by the
    /// caller, who then says the SHA-256 of the bytes it was handed (`None`:
    /// nothing is stored, `Ok(None)`).
    fn put_streamed<R: Read>(
        &self,
        db: &BlobDb,
        mut input: R,
        tap: &mut (dyn FnMut(&[u8]) + Send),
        caller_checksum: Option<&mut dyn FnMut() -> Option<String>>,
    ) -> Result<Option<Stored>, StoreError> {
        let pending = PathBuf::from("postgres:blobs/(incoming)");
        let err = |action, source| StoreError {
            action,
            path: pending.clone(),
            source,
        };
        let handle = db.handle().ok_or_else(|| {
            err(
                "store",
                io::Error::other("the store's database runtime is stopped"),
            )
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let ledger = db.ledger.clone();
        let writing = handle.spawn(async move { ledger.put_blob_streamed(rx).await });
        let mut hasher = caller_checksum.is_none().then(Sha256::new);
        let mut size = 0u64;
        let read = loop {
            let mut buf = vec![0u8; BLOB_CHUNK];
            let mut filled = 0;
            while filled < buf.len() {
                match input.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(err("read the arrival into", e)),
                }
            }
            buf.truncate(filled);
            if let Some(h) = &mut hasher {
                h.update(&buf);
            }
            tap(&buf);
            size += filled as u64;
            let last = filled < BLOB_CHUNK;
            // The writer stopped (its error is told below).
            if filled > 0 && futures::executor::block_on(tx.send(BlobPiece::Data(buf))).is_err() {
                break Err(());
            }
            if last {
                break Ok(());
            }
        };
        let checksum = match (hasher, caller_checksum) {
            (Some(h), _) => Some(hex::encode(h.finalize())),
            (None, Some(said)) => said(),
            (None, None) => None,
        };
        let whole = read.is_ok() && checksum.is_some();
        if let (true, Some(checksum)) = (whole, &checksum) {
            let end = BlobPiece::End {
                checksum: checksum.clone(),
                size,
            };
            let _ = futures::executor::block_on(tx.send(end));
        }
        // Without its end the transaction is rolled back.
        drop(tx);
        let written =
            futures::executor::block_on(writing).map_err(|e| err("store", io::Error::other(e)))?;
        let Some(checksum) = checksum.filter(|_| whole) else {
            // The writer's own failure first; else the caller could not
            // say the checksum, and nothing was stored.
            return match (read, written) {
                (Err(()), Err(e)) => Err(err("store", io::Error::other(e))),
                _ => Ok(None),
            };
        };
        written.map_err(|e| err("store", io::Error::other(e)))?;
        Ok(Some(Stored {
            path: self.path_of(&checksum),
            checksum,
            size,
        }))
    }

    /// Into the database store: [`ContentStore::put_file`] with the bytes
    /// hashed by the caller (a verifier, which hashes them anyway): each is
    /// handed to `tap` in order, then `checksum` says their SHA-256.
    /// `Ok(None)` when it cannot (nothing is stored), and from a directory
    /// store, which reads its copy back cheaply.
    pub fn put_file_hashed_by(
        &self,
        path: &Path,
        tap: &mut (dyn FnMut(&[u8]) + Send),
        checksum: &mut dyn FnMut() -> Option<String>,
    ) -> Result<Option<Stored>, StoreError> {
        let Some(db) = &self.db else {
            return Ok(None);
        };
        let f = File::open(path).map_err(|source| StoreError {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        self.put_streamed(db, f, tap, Some(checksum))
            .map_err(|e| e.of_source(path))
    }

    /// Start a blob written piece by piece (a download): bytes go to a temp
    /// file in the store and are hashed on the way. Dropping the returned
    /// writer without [`Incoming::commit`] discards them.
    pub fn begin(&self) -> Result<Incoming, StoreError> {
        self.begin_in(&self.root.join("tmp"), "incoming-", ".part")
    }

    /// [`ContentStore::begin`] with the temp file in `dir` (a channel's
    /// spool, on the store's file system so a commit is a rename).
    pub fn begin_in(&self, dir: &Path, prefix: &str, suffix: &str) -> Result<Incoming, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let err = |source| StoreError {
            action: "create a temp file in",
            path: dir.to_path_buf(),
            source,
        };
        // Held locked while this process writes it: a temp file nobody
        // holds was left by a process that died, and may be removed
        // ([`remove_abandoned`]). One removed between its creation and the
        // lock is made again.
        for _ in 0..8 {
            let tmp = tempfile::Builder::new()
                .prefix(prefix)
                .suffix(suffix)
                .tempfile_in(dir)
                .map_err(err)?;
            tmp.as_file()
                .try_lock()
                .map_err(|e| err(io::Error::from(e)))?;
            let held = tmp.as_file().metadata().map_err(err)?;
            match std::fs::metadata(tmp.path()) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                    return Ok(Incoming {
                        store: self.clone(),
                        tmp,
                        in_order: Some(0),
                        hasher: Some(Sha256::new()),
                        size: 0,
                    });
                }
                _ => continue,
            }
        }
        Err(err(io::Error::other("temp files keep vanishing")))
    }

    /// Store a file from disk. Into the directory store the bytes are
    /// copied by the kernel (no trip through this process), a slice at a
    /// time, while a second thread hashes the copy just behind it: the
    /// checksum is of the bytes stored, whatever happens to the source.
    pub fn put_file(&self, path: &Path) -> Result<Stored, StoreError> {
        let f = File::open(path).map_err(|source| StoreError {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        if self.db.is_some() {
            return self.put(f).map_err(|e| e.of_source(path));
        }
        // A small file is read and written here: a kernel copy and a
        // hashing thread cost more than it.
        if let Ok(m) = f.metadata()
            && m.len() <= SMALL_FILE
        {
            let mut bytes = Vec::with_capacity(m.len() as usize + 1);
            (&f).take(SMALL_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| StoreError {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                })?;
            if bytes.len() as u64 > SMALL_FILE {
                // It grew since it was looked at: the rest streams in after.
                return self
                    .put(io::Cursor::new(bytes).chain(&f))
                    .map_err(|e| e.of_source(path));
            }
            let mut incoming = self.begin()?;
            incoming.write(&bytes)?;
            return incoming.commit();
        }
        let incoming = self.begin()?;
        let checksum = copy_hashing(&f, incoming.tmp.as_file()).map_err(|e| match e {
            // The copy does not say which side failed; these are the store's.
            Copy::Copy(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull
                        | io::ErrorKind::QuotaExceeded
                        | io::ErrorKind::FileTooLarge
                        | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                incoming.error("write to", e)
            }
            Copy::Copy(source) => StoreError {
                action: "copy into the store",
                path: path.to_path_buf(),
                source,
            },
            Copy::Hash(e) => incoming.error("read back", e),
        })?;
        incoming.store.adopt(incoming.tmp, checksum)
    }
}

/// What failed in [`copy_hashing`].
enum Copy {
    /// The copy itself (reading the source, or writing the store's file).
    Copy(io::Error),
    /// Reading the copy back to hash it.
    Hash(io::Error),
}

/// A small file: staged by [`ContentStore::put_file`] without a kernel copy
/// or a hashing thread, and verified whole in memory on one thread (a
/// checksum thread and chunk buffers cost more than such a file).
pub const SMALL_FILE: u64 = 256 << 10;

/// Bytes copied by the kernel before the hashing thread is told.
const COPY_SLICE: u64 = 8 << 20;

/// Copy `src` to the empty `dst` (in the kernel: `copy_file_range` where
/// the file system has it), a slice at a time, starting each slice's
/// writeback; a second thread hashes `dst` behind the copy. Returns the
/// SHA-256 of what `dst` holds.
fn copy_hashing(src: &File, dst: &File) -> Result<String, Copy> {
    use std::os::unix::fs::FileExt;
    let (copied_tx, copied_rx) = std::sync::mpsc::channel::<u64>();
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            for end in copied_rx {
                while at < end {
                    let want = usize::try_from(end - at)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    match dst.read_at(&mut buf[..want], at) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the copy ends at byte {at}, before {end}"),
                            ));
                        }
                        Ok(n) => {
                            hasher.update(&buf[..n]);
                            at += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(hex::encode(hasher.finalize()))
        });
        let mut reader = src;
        let mut writer = dst;
        let mut end = 0u64;
        let copied = loop {
            // `io::copy` between two files is `copy_file_range` on Linux.
            match io::copy(&mut io::Read::take(&mut reader, COPY_SLICE), &mut writer) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    start_writeback(dst, end, n);
                    end += n;
                    if copied_tx.send(end).is_err() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        drop(copied_tx);
        let hashed = hashing
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the hashing thread panicked")));
        match (copied, hashed) {
            (Err(e), _) => Err(Copy::Copy(e)),
            (Ok(()), Err(e)) => Err(Copy::Hash(e)),
            (Ok(()), Ok(sum)) => Ok(sum),
        }
    })
}

/// A blob being written into the store; see [`ContentStore::begin`]. The
/// one hashing writer every channel uses: bytes written in order are hashed
/// on the way and written back to disk as they stream in (so the fsync
/// before an acknowledgement has little left to do); bytes written out of
/// order (an SFTP client's pipelined writes) are hashed at commit instead.
/// Blocking: run it on a blocking thread, not an async one.
pub struct Incoming {
    store: ContentStore,
    tmp: tempfile::NamedTempFile,
    /// The end of the bytes written in order from 0, while every write
    /// continued where the last one ended; `None` once one did not.
    in_order: Option<u64>,
    /// The hash of those bytes, unless the caller hashes them
    /// ([`Incoming::hash_elsewhere`]) or a write went out of order.
    hasher: Option<Sha256>,
    size: u64,
}

impl Incoming {
    fn error(&self, action: &'static str, source: io::Error) -> StoreError {
        StoreError {
            action,
            path: self.tmp.path().to_path_buf(),
            source,
        }
    }

    /// Append bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_at(self.size, bytes)
    }

    /// Write bytes at `offset` (a file written in pieces, in any order).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        if let Err(e) = self.tmp.as_file().write_all_at(bytes, offset) {
            return Err(self.error("write to", e));
        }
        let end = offset.saturating_add(bytes.len() as u64);
        if self.in_order == Some(offset) {
            if let Some(hasher) = &mut self.hasher {
                hasher.update(bytes);
            }
            self.in_order = Some(end);
            // Bytes bound for the database never need to be on this disk:
            // no writeback for them.
            if self.store.db.is_none() && end / WRITEBACK_EVERY > offset / WRITEBACK_EVERY {
                let start = (offset / WRITEBACK_EVERY) * WRITEBACK_EVERY;
                start_writeback(self.tmp.as_file(), start, end - start);
            }
        } else {
            self.in_order = None;
            self.hasher = None;
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Bytes written so far (the end of the furthest write).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temp file's metadata (size and modification time for listings).
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.tmp.as_file().metadata()
    }

    /// The SHA-256 of the bytes written, reading them back when they did
    /// not come in order.
    fn checksum(&mut self) -> Result<String, StoreError> {
        match self.hasher.take() {
            Some(hasher) if self.written_in_order() => Ok(hex::encode(hasher.finalize())),
            _ => {
                let mut file = self.tmp.reopen().map_err(|e| self.error("reopen", e))?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => hasher.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.error("read back", e)),
                    }
                }
                Ok(hex::encode(hasher.finalize()))
            }
        }
    }

    /// Make the blob durable under its checksum.
    pub fn commit(mut self) -> Result<Stored, StoreError> {
        let checksum = self.checksum()?;
        self.store.adopt(self.tmp, checksum)
    }

    /// Whether every byte was written in order, each write continuing where
    /// the last one ended.
    pub fn written_in_order(&self) -> bool {
        self.in_order == Some(self.size)
    }

    /// Leave the hashing of the bytes written in order to the caller, who
    /// hashes them anyway (the format verifier on the way in); commit with
    /// [`Incoming::commit_hashed`]. Call it before the first write.
    pub fn hash_elsewhere(&mut self) {
        self.hasher = None;
    }

    /// Make the blob durable under `checksum`, the caller's SHA-256 of
    /// every byte it wrote, in order. Taken only when the writes did come in
    /// order from the first byte to the last; otherwise the file is read
    /// back and hashed, as [`Incoming::commit`] does.
    pub fn commit_hashed(mut self, checksum: String) -> Result<Stored, StoreError> {
        let checksum = if self.written_in_order() {
            checksum
        } else {
            self.checksum()?
        };
        self.store.adopt(self.tmp, checksum)
    }

    /// Keep the bytes outside the store: durably at `path` (a control-file
    /// pair's first half, held until the other arrives).
    pub fn persist_at(self, path: &Path) -> Result<(), StoreError> {
        let err = |action, source| StoreError {
            action,
            path: path.to_path_buf(),
            source,
        };
        self.tmp.as_file().sync_all().map_err(|e| err("fsync", e))?;
        self.tmp
            .persist(path)
            .map_err(|e| err("rename to", e.error))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        sync_dir(dir)
    }
}

impl ContentStore {
    /// Make a temp file the blob of `checksum` — the caller hashed exactly
    /// these bytes on the way in — by fsync and rename (no copy). A temp
    /// file on another file system is copied (and hashed again) instead.
    pub fn adopt(
        &self,
        tmp: tempfile::NamedTempFile,
        checksum: String,
    ) -> Result<Stored, StoreError> {
        let tmp_err = |action, source| StoreError {
            action,
            path: tmp.path().to_path_buf(),
            source,
        };
        if let Some(db) = &self.db {
            let size = tmp
                .as_file()
                .metadata()
                .map_err(|e| tmp_err("stat", e))?
                .len();
            let file = tmp.reopen().map_err(|e| tmp_err("reopen", e))?;
            let (ledger, sum) = (db.ledger.clone(), checksum.clone());
            db.run(async move {
                ledger
                    .put_blob(&sum, size, tokio::fs::File::from_std(file))
                    .await
            })
            .map_err(|source| StoreError {
                action: "store",
                path: self.path_of(&checksum),
                source,
            })?;
            return Ok(Stored {
                path: self.path_of(&checksum),
                checksum,
                size,
            });
        }
        tmp.as_file().sync_all().map_err(|e| tmp_err("fsync", e))?;
        let size = tmp
            .as_file()
            .metadata()
            .map_err(|e| tmp_err("stat", e))?
            .len();
        let root = &self.root;
        let path = self.path_of(&checksum);
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.clone());
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|source| StoreError {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        }
        // The shard directory's own entry must survive a crash too, also
        // when another process made it and has not synced the root yet.
        let shard = checksum
            .get(..2)
            .and_then(|s| u8::from_str_radix(s, 16).ok());
        if !shard.is_some_and(|s| self.shard_synced(s)) {
            sync_dir(root)?;
            if let Some(s) = shard {
                self.mark_shard_synced(s);
            }
        }
        match tmp.persist_noclobber(&path) {
            Ok(_) => sync_dir(&dir)?,
            // The same bytes are already stored (perhaps by another process,
            // which may not have synced the directory yet).
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => sync_dir(&dir)?,
            Err(e) if e.error.kind() == io::ErrorKind::CrossesDevices => {
                return self.put_file(e.file.path());
            }
            Err(e) => {
                return Err(StoreError {
                    action: "rename a temp file to",
                    path,
                    source: e.error,
                });
            }
        }
        Ok(Stored {
            checksum,
            size,
            path,
        })
    }
}

fn local_path(root: &Path, checksum: &str) -> PathBuf {
    let shard = checksum.get(..2).unwrap_or("xx");
    root.join(shard).join(checksum)
}

/// A stored blob open for reading, from the directory or the database.
/// Read in order to its end, it checks the bytes against the checksum
/// (unless opened with [`ContentStore::open_blob_unhashed`]); `read_at`
/// serves a client reading in any order (SFTP `/outbox`).
pub struct Blob {
    checksum: String,
    what: PathBuf,
    source: Source,
    hasher: Option<Sha256>,
    done: bool,
}

enum Source {
    File(File),
    Db {
        db: Arc<BlobDb>,
        /// Chunks streamed in order by one query (started at the first read).
        rx: Option<tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>>,
        chunk: Vec<u8>,
        at: usize,
        /// The last chunk read by `read_at`.
        cached: Option<(i32, Vec<u8>)>,
        /// The blob's size, once `read_at` asked.
        size: Option<u64>,
    },
}

impl Blob {
    /// Where the blob is, for messages.
    pub fn describe(&self) -> String {
        self.what.display().to_string()
    }

    /// Read up to `buf.len()` bytes at `offset` (fewer at a chunk's end;
    /// 0 at the end of the blob). Not checked against the checksum.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match &mut self.source {
            Source::File(f) => {
                use std::os::unix::fs::FileExt;
                f.read_at(buf, offset)
            }
            Source::Db {
                db, cached, size, ..
            } => {
                // The blob's size once (the end is where reads past it stop,
                // without a query each).
                let total = match *size {
                    Some(t) => t,
                    None => {
                        let (ledger, sum) = (db.ledger.clone(), self.checksum.clone());
                        let t = db
                            .run(async move { ledger.blob_size(&sum).await })?
                            .ok_or_else(|| {
                                io::Error::new(
                                    io::ErrorKind::NotFound,
                                    format!("{}: not in the store", self.what.display()),
                                )
                            })?;
                        *size = Some(t);
                        t
                    }
                };
                if offset >= total || buf.is_empty() {
                    return Ok(0);
                }
                let damaged = |n: u64| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: no stored bytes at offset {offset} (chunk {n}) of a blob of {total} bytes; the content store is damaged",
                            self.what.display()
                        ),
                    )
                };
                let chunk = offset / BLOB_CHUNK as u64;
                let n = i32::try_from(chunk).map_err(|_| damaged(chunk))?;
                let within = (offset % BLOB_CHUNK as u64) as usize;
                if cached.as_ref().is_none_or(|(c, _)| *c != n) {
                    let (ledger, sum) = (db.ledger.clone(), self.checksum.clone());
                    let data = db.run(async move { ledger.blob_chunk(&sum, n).await })?;
                    *cached = Some((n, data.unwrap_or_default()));
                }
                let data = cached.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
                // Short of the blob's end: a chunk missing or cut short.
                let rest = data.get(within..).unwrap_or_default();
                if rest.is_empty() {
                    return Err(damaged(chunk));
                }
                let k = rest.len().min(buf.len());
                buf[..k].copy_from_slice(&rest[..k]);
                Ok(k)
            }
        }
    }

    fn read_next(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::File(f) => f.read(buf),
            Source::Db {
                db, rx, chunk, at, ..
            } => {
                if *at >= chunk.len() {
                    if rx.is_none() {
                        let (tx, r) = tokio::sync::mpsc::channel(4);
                        let (ledger, sum) = (db.ledger.clone(), self.checksum.clone());
                        let handle = db.handle().ok_or_else(|| {
                            io::Error::other("the store's database runtime is stopped")
                        })?;
                        handle.spawn(async move { ledger.pump_blob(&sum, 0, tx).await });
                        *rx = Some(r);
                    }
                    let Some(r) = rx.as_mut() else {
                        return Ok(0);
                    };
                    match futures::executor::block_on(r.recv()) {
                        None => return Ok(0),
                        Some(Err(e)) => return Err(io::Error::other(e)),
                        Some(Ok(next)) => {
                            *chunk = next;
                            *at = 0;
                        }
                    }
                }
                let k = (chunk.len() - *at).min(buf.len());
                buf[..k].copy_from_slice(&chunk[*at..*at + k]);
                *at += k;
                Ok(k)
            }
        }
    }
}

impl Read for Blob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.read_next(buf)?;
        match &mut self.hasher {
            Some(h) if n > 0 => h.update(&buf[..n]),
            Some(h) => {
                let found = hex::encode(std::mem::take(h).finalize());
                self.hasher = None;
                self.done = true;
                if found != self.checksum {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: the stored bytes hash to {found}, not {}; the content store is damaged",
                            self.what.display(),
                            self.checksum
                        ),
                    ));
                }
            }
            None => {}
        }
        Ok(n)
    }
}

/// Temp files of processes that died while writing them: in `dir`, named
/// `<prefix>…`, and unlocked (a live writer holds its temp file locked from
/// the moment it exists, see [`ContentStore::begin_in`]). Removed; returns
/// how many.
pub fn remove_abandoned(dir: &Path, prefix: &str) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix)
            || !e.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        if f.try_lock().is_ok() && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

impl ContentStore {
    /// Remove the store's temp files whose writer died (see [`remove_abandoned`]).
    pub fn remove_abandoned(&self) -> Result<usize, StoreError> {
        let dir = self.root.join("tmp");
        remove_abandoned(&dir, "incoming-").map_err(|source| StoreError {
            action: "clean",
            path: dir,
            source,
        })
    }
}

/// Bytes written between two writeback kicks.
pub const WRITEBACK_EVERY: u64 = 32 << 20;

/// Start writing `len` bytes at `offset` of `file` back to disk without
/// waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): a large arrival
/// is flushed while it streams in, so the fsync before it is acknowledged
/// has little left to do. Only a hint; errors surface at that fsync.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a valid open descriptor and plain integers; the call only
        // schedules I/O on pages of this file.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// fsync a directory so a rename in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError {
            action: "fsync",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_bytes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let a = store.put(&b"H...T"[..]).unwrap();
        let b = store.put(&b"H...T"[..]).unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read(&a.path).unwrap(), b"H...T");
        assert_eq!(a.checksum, hex::encode(Sha256::digest(b"H...T")));
        assert!(a.path.starts_with(dir.path().join(&a.checksum[..2])));
        // No temp files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_shard_made_by_another_process_is_still_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        let checksum = hex::encode(Sha256::digest(b"H...T"));
        // Another process made the shard directory (and may not have synced
        // the root): this process syncs it before its first blob there.
        std::fs::create_dir_all(dir.path().join(&checksum[..2])).unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let shard = u8::from_str_radix(&checksum[..2], 16).unwrap();
        assert!(!store.shard_synced(shard));
        store.put(&b"H...T"[..]).unwrap();
        assert!(store.shard_synced(shard));
        // Clones (the channels' copies) share what is known.
        assert!(store.clone().shard_synced(shard));
        assert!(!store.shard_synced(shard ^ 1));
    }

    #[test]
    fn a_failed_read_leaves_nothing() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("cable cut"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let e = store.put(Broken(3)).unwrap_err();
        assert!(e.to_string().contains("cable cut"), "{e}");
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec!["tmp"]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
