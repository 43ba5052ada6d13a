//! Stage: the content-addressed store. The exact bytes of every arrival are
//! written to `<data-dir>/store/<aa>/<sha256>` (temp file → fsync → rename →
//! fsync of the directory) before the arrival is recorded or acknowledged.
//! Identical bytes are stored once. Nothing is ever deleted from the store.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("content store: cannot {action} {path}: {source}")]
pub struct StoreError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Where a staged blob lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub checksum: String,
    pub size: u64,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    /// Shards (a bit per two-hex-digit name) whose entry in the root this
    /// process has synced. It only saves fsyncs: a shard not marked is
    /// synced again, whoever created it.
    synced_shards: Arc<[AtomicU64; 4]>,
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
        })
    }

    /// The path of a blob by its hex checksum (two-level fan-out keeps
    /// directories small).
    pub fn path_of(&self, checksum: &str) -> PathBuf {
        let shard = checksum.get(..2).unwrap_or("xx");
        self.root.join(shard).join(checksum)
    }

    /// Open a stored blob for reading.
    pub fn open_blob(&self, checksum: &str) -> Result<File, StoreError> {
        let path = self.path_of(checksum);
        File::open(&path).map_err(|source| StoreError {
            action: "open",
            path,
            source,
        })
    }

    /// Read a stored blob whole (small blobs such as control files).
    pub fn read_blob(&self, checksum: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(checksum);
        std::fs::read(&path).map_err(|source| StoreError {
            action: "read",
            path,
            source,
        })
    }

    /// Copy everything from `input` into the store, durably. Returns the
    /// checksum, size and final path. A failure (disk full, read error) leaves
    /// nothing behind but an unlinked temp file.
    pub fn put<R: Read>(&self, mut input: R) -> Result<Stored, StoreError> {
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

    /// Store a file from disk.
    pub fn put_file(&self, path: &Path) -> Result<Stored, StoreError> {
        let f = File::open(path).map_err(|source| StoreError {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        self.put(f).map_err(|mut e| {
            if e.action == "read the arrival into" {
                e.path = path.to_path_buf();
                e.action = "read";
            }
            e
        })
    }
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
            if end / WRITEBACK_EVERY > offset / WRITEBACK_EVERY {
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
