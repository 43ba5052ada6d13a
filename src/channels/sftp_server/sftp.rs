//! The SFTP subsystem of one session: every request is resolved through the
//! path jail, answered quickly (uploads are written at their offset into a
//! local temp file), and refused with a status and a message when it is not
//! one of the few things a partner may do.

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use super::jail::{self, JailError, Location};
use super::outbox::Collecting;
use super::session::Activity;
use super::upload::{Completion, Peer, Uploads};
use crate::channels::watch::is_temporary;
use crate::intake::{Arriving, WriteBehind, receipt};

/// Handles one session may hold open at once.
const MAX_HANDLES: usize = 64;
/// Entries per READDIR answer.
const DIR_CHUNK: usize = 100;
/// Largest READ answered (OpenSSH asks for 32 KiB or less).
const MAX_READ: u32 = 256 * 1024;

/// Largest request packet: a write of 256 KiB and its header.
pub const MAX_PACKET: u32 = 256 * 1024 + 1024;
/// Largest write announced in `limits@openssh.com` (OpenSSH's own figure).
const MAX_WRITE: u64 = 255 * 1024;
/// How long a stat of a name uploaded in the same SFTP session still answers its
/// size after the upload was taken (clients such as paramiko's `put()`
/// check the size right after the close).
const RECENT_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// Names remembered that way, at most.
const MAX_RECENT: usize = 1024;

/// Clients see paths relative to `/`.
const HOME: &str = "/";

enum Open {
    Upload(Box<Upload>),
    Receipt(std::fs::File),
    /// A receipt rendered from the ledger (a store shared by several nodes).
    ReceiptText(Vec<u8>, FileAttributes),
    Delivery(Box<Collecting>),
    Dir {
        entries: Vec<File>,
        next: usize,
    },
}

struct Upload {
    name: String,
    /// The store's hashing writer (the spool file), verifying on the way
    /// in, written behind the session's requests; `None` once refused.
    writer: Option<WriteBehind>,
    size: u64,
    /// The byte ranges the client wrote: at the close they must cover the
    /// whole file, so a hole (a resume of bytes this server does not hold)
    /// is never stored as NULs.
    written: rangemap::RangeSet<u64>,
    /// Opened with APPEND: every write goes to the end, whatever its offset.
    append: bool,
    /// Why the upload was refused (too large, a write failed): the close
    /// reports it and nothing is recorded.
    refused: Option<String>,
    /// When it was opened (for the transfer time in the log).
    opened: std::time::Instant,
}

pub struct SftpSession {
    uploads: Arc<Uploads>,
    peer: Peer,
    max_file_bytes: u64,
    activity: Arc<Activity>,
    handles: HashMap<String, Open>,
    next_handle: u64,
    /// Closed uploads under a temporary name (`x.part`), waiting to be renamed
    /// to their final name in the same SFTP session.
    parked: HashMap<String, Arriving>,
    /// Names taken in the same SFTP session: their size, and when.
    recent: HashMap<String, (u64, std::time::Instant)>,
    initialized: bool,
}

fn status(id: u32, message: &str) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: message.to_string(),
        language_tag: "en-US".into(),
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> StatusReply {
    code.with_message(message)
}

/// A write to the spool failed: logged, and what the client is told.
fn spool_failed(peer: &Peer, name: &str, error: &str) -> String {
    tracing::error!(partner = %peer.partner, user = %peer.user, addr = %peer.addr, name = %name.escape_debug(), error = %error, "spool write failed; upload discarded");
    format!("cannot write the upload: {error}")
}

fn jail_refusal(e: JailError) -> StatusReply {
    let code = match e {
        JailError::NotFound(_) => StatusCode::NoSuchFile,
        _ => StatusCode::PermissionDenied,
    };
    refuse(code, e.to_string())
}

fn dir_attrs() -> FileAttributes {
    let mut a = FileAttributes {
        permissions: Some(0o755),
        size: Some(0),
        ..FileAttributes::default()
    };
    a.set_dir(true);
    a
}

fn file_attrs(meta: &std::fs::Metadata) -> FileAttributes {
    let mut a = FileAttributes {
        size: Some(meta.len()),
        permissions: Some(0o644),
        mtime: u32::try_from(meta.mtime()).ok(),
        atime: u32::try_from(meta.mtime()).ok(),
        ..FileAttributes::default()
    };
    a.set_regular(true);
    a
}

fn text_attrs(size: usize, at: chrono::DateTime<chrono::Utc>) -> FileAttributes {
    let at = u32::try_from(at.timestamp()).ok();
    let mut a = FileAttributes {
        size: Some(size as u64),
        permissions: Some(0o644),
        mtime: at,
        atime: at,
        ..FileAttributes::default()
    };
    a.set_regular(true);
    a
}

fn delivery_attrs(d: &crate::ledger::DeliveryRow) -> FileAttributes {
    let at = u32::try_from(d.created_at.timestamp()).ok();
    let mut a = FileAttributes {
        size: u64::try_from(d.size).ok(),
        permissions: Some(0o444),
        mtime: at,
        atime: at,
        ..FileAttributes::default()
    };
    a.set_regular(true);
    a
}

impl SftpSession {
    pub fn new(
        uploads: Arc<Uploads>,
        peer: Peer,
        max_file_bytes: u64,
        activity: Arc<Activity>,
    ) -> SftpSession {
        SftpSession {
            uploads,
            peer,
            max_file_bytes,
            activity,
            handles: HashMap::new(),
            next_handle: 0,
            parked: HashMap::new(),
            recent: HashMap::new(),
            initialized: false,
        }
    }

    fn resolve(&self, path: &str) -> Result<Location, StatusReply> {
        jail::resolve(HOME, path).map_err(|e| {
            let what = match e {
                JailError::NotFound(_) => "a path outside /inbox, /receipts and /outbox",
                JailError::BadName(_) => "a file name not allowed",
                _ => "a malformed path",
            };
            self.log_refusal(what, path, &e.to_string());
            jail_refusal(e)
        })
    }

    /// Log a refused request: who, from where, what, and the path (escaped).
    fn log_refusal(&self, what: &str, path: &str, why: &str) {
        tracing::warn!(
            partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr,
            path = %path.escape_debug(), reason = %why, "refused: {what}"
        );
    }

    /// Refuse with `code` and `message`, logged.
    fn refused(
        &self,
        what: &str,
        path: &str,
        code: StatusCode,
        message: impl Into<String>,
    ) -> StatusReply {
        let message = message.into();
        self.log_refusal(what, path, &message);
        refuse(code, message)
    }

    /// Remember a name just taken, for a while, for `stat`.
    fn remember(&mut self, name: &str, size: u64) {
        let now = std::time::Instant::now();
        self.recent
            .retain(|_, (_, at)| now.duration_since(*at) < RECENT_FOR);
        if self.recent.len() >= MAX_RECENT
            && let Some(oldest) = self
                .recent
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(n, _)| n.clone())
        {
            self.recent.remove(&oldest);
        }
        self.recent.insert(name.to_string(), (size, now));
    }

    fn recent_size(&self, name: &str) -> Option<u64> {
        self.recent
            .get(name)
            .filter(|(_, at)| at.elapsed() < RECENT_FOR)
            .map(|(size, _)| *size)
    }

    fn add_handle(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(refuse(
                StatusCode::Failure,
                format!("too many open handles (at most {MAX_HANDLES})"),
            ));
        }
        self.next_handle += 1;
        // Plain ASCII decimal: russh-sftp keeps handles as (lossily decoded) strings.
        let h = self.next_handle.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    /// A receipt file, opened without following symlinks: lstat, open, then
    /// check the opened file is the very regular file that was lstat'ed.
    fn open_receipt(&self, name: &str) -> Result<(std::fs::File, std::fs::Metadata), StatusReply> {
        let path = self.uploads.receipts_dir(&self.peer.partner).join(name);
        let missing = || {
            refuse(
                StatusCode::NoSuchFile,
                format!("no such file: /receipts/{name}"),
            )
        };
        let before = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
        if !before.file_type().is_file() {
            return Err(missing());
        }
        let file = std::fs::File::open(&path).map_err(|_| missing())?;
        let after = file.metadata().map_err(|_| missing())?;
        if after.dev() != before.dev() || after.ino() != before.ino() || !after.is_file() {
            return Err(missing());
        }
        Ok((file, after))
    }

    fn inbox_entry(&self, name: &str) -> Option<FileAttributes> {
        if let Some(t) = self.parked.get(name) {
            return t.metadata().ok().map(|m| file_attrs(&m));
        }
        if let Some(held) = self
            .uploads
            .held(&self.peer.partner)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| file_attrs(&m))
        {
            return Some(held);
        }
        self.recent_size(name).map(|size| {
            let mut a = FileAttributes {
                size: Some(size),
                permissions: Some(0o644),
                ..FileAttributes::default()
            };
            a.set_regular(true);
            a
        })
    }

    /// The partner's deliveries in `/outbox`, one per name.
    async fn outbox(&self) -> Result<Vec<crate::ledger::DeliveryRow>, StatusReply> {
        match self.uploads.gw().collectable(&self.peer.partner).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                tracing::error!(partner = %self.peer.partner, error = %e, "cannot list the outbox");
                Err(refuse(
                    StatusCode::Failure,
                    "the outbox cannot be read right now",
                ))
            }
        }
    }

    /// With the content store in the ledger's database, several nodes
    /// serve one partner: `/receipts` is read from the ledger (every
    /// verdict of the last 30 days, whichever node judged the file) and
    /// `/inbox` lists halves held on any node.
    fn shared(&self) -> bool {
        self.uploads.gw().store.in_database()
    }

    /// The partner's receipts from the ledger: name → (text, attributes);
    /// a later arrival of a name replaces the earlier one's receipt.
    async fn ledger_receipts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, (Vec<u8>, FileAttributes)>, StatusReply> {
        let gw = self.uploads.gw();
        let since = gw.clock.now() - chrono::Duration::days(30);
        let channels = [
            crate::model::Channel::SftpPush.as_str(),
            crate::model::Channel::SftpPull.as_str(),
            crate::model::Channel::Watch.as_str(),
        ];
        let rows = gw
            .ledger
            .judged_since(&self.peer.partner, &channels, since)
            .await
            .map_err(|e| {
                tracing::error!(partner = %self.peer.partner, error = %e, "cannot read receipts from the ledger");
                refuse(StatusCode::Failure, "the receipts cannot be read right now")
            })?;
        Ok(rows
            .iter()
            .map(|r| {
                let text = receipt::render(r).into_bytes();
                let at = r.decided_at.unwrap_or(r.received_at);
                let attrs = text_attrs(text.len(), at);
                (receipt::file_name(&r.name), (text, attrs))
            })
            .collect())
    }

    async fn ledger_receipt(&self, name: &str) -> Result<(Vec<u8>, FileAttributes), StatusReply> {
        self.ledger_receipts().await?.remove(name).ok_or_else(|| {
            refuse(
                StatusCode::NoSuchFile,
                format!("no such file: /receipts/{name}"),
            )
        })
    }

    async fn outbox_entry(&self, name: &str) -> Result<crate::ledger::DeliveryRow, StatusReply> {
        self.outbox()
            .await?
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                refuse(
                    StatusCode::NoSuchFile,
                    format!("no such file: /outbox/{name}"),
                )
            })
    }

    async fn stat_location(&self, loc: &Location) -> Result<FileAttributes, StatusReply> {
        match loc {
            Location::OutboxFile(name) => Ok(delivery_attrs(&self.outbox_entry(name).await?)),
            l if l.is_dir() => Ok(dir_attrs()),
            Location::InboxFile(name) => self.inbox_entry(name).ok_or_else(|| {
                refuse(
                    StatusCode::NoSuchFile,
                    format!("no such file: /inbox/{name}"),
                )
            }),
            Location::ReceiptFile(name) if self.shared() => {
                self.ledger_receipt(name).await.map(|(_, a)| a)
            }
            Location::ReceiptFile(name) => self.open_receipt(name).map(|(_, m)| file_attrs(&m)),
            _ => Err(refuse(StatusCode::NoSuchFile, "no such file")),
        }
    }

    async fn listing(&self, loc: &Location) -> Result<Vec<File>, StatusReply> {
        Ok(match loc {
            Location::Root => vec![
                File::new("inbox", dir_attrs()),
                File::new("receipts", dir_attrs()),
                File::new("outbox", dir_attrs()),
            ],
            Location::OutboxDir => {
                let mut v: Vec<File> = self
                    .outbox()
                    .await?
                    .iter()
                    .map(|d| File::new(d.name.clone(), delivery_attrs(d)))
                    .collect();
                v.sort_by(|a, b| a.filename.cmp(&b.filename));
                v
            }
            Location::InboxDir => {
                let mut v: Vec<File> = self
                    .uploads
                    .held(&self.peer.partner)
                    .into_iter()
                    .map(|(n, m)| File::new(n, file_attrs(&m)))
                    .collect();
                if self.shared() {
                    match self
                        .uploads
                        .gw()
                        .ledger
                        .held_uploads(&self.peer.partner)
                        .await
                    {
                        Ok(held) => v
                            .extend(held.into_iter().map(|h| {
                                File::new(h.name, text_attrs(h.size as usize, h.held_at))
                            })),
                        Err(e) => {
                            tracing::error!(partner = %self.peer.partner, error = %e, "cannot list held uploads");
                        }
                    }
                }
                for (n, t) in &self.parked {
                    if let Ok(m) = t.metadata() {
                        v.push(File::new(n.clone(), file_attrs(&m)));
                    }
                }
                v
            }
            Location::ReceiptsDir if self.shared() => self
                .ledger_receipts()
                .await?
                .into_iter()
                .map(|(n, (_, a))| File::new(n, a))
                .collect(),
            Location::ReceiptsDir => {
                let mut v = Vec::new();
                if let Ok(entries) =
                    std::fs::read_dir(self.uploads.receipts_dir(&self.peer.partner))
                {
                    for e in entries.flatten() {
                        let Ok(name) = e.file_name().into_string() else {
                            continue;
                        };
                        if name.starts_with('.') {
                            continue;
                        }
                        if let Ok(m) = e.metadata()
                            && m.is_file()
                        {
                            v.push(File::new(name, file_attrs(&m)));
                        }
                    }
                }
                v.sort_by(|a, b| a.filename.cmp(&b.filename));
                v
            }
            _ => Vec::new(),
        })
    }

    /// Open `/inbox/<name>` for writing. With truncation (what `put` sends)
    /// a new upload. Without it the client means to resume or append: an
    /// upload parked in the same SFTP session under that name is continued from its
    /// bytes; a name already received (held for its counterpart, or taken)
    /// is refused, since its bytes are no longer open to change; a new name
    /// starts empty (and a write past its start leaves a hole the close
    /// refuses).
    fn open_upload(&mut self, name: &str, pflags: OpenFlags) -> Result<Upload, StatusReply> {
        let path = format!("/inbox/{name}");
        let append = pflags.contains(OpenFlags::APPEND);
        let truncate = pflags.contains(OpenFlags::TRUNCATE);
        let parked = self.parked.remove(name);
        if !truncate && let Some(writer) = parked {
            let size = writer.metadata().map(|m| m.len()).map_err(|e| {
                refuse(
                    StatusCode::Failure,
                    format!("cannot read the parked upload: {e}"),
                )
            })?;
            let mut written = rangemap::RangeSet::new();
            if size > 0 {
                written.insert(0..size);
            }
            tracing::info!(partner = %self.peer.partner, addr = %self.peer.addr, name = %name.escape_debug(), bytes = size, "upload reopened to continue");
            return Ok(Upload {
                name: name.to_string(),
                writer: Some(self.write_behind(writer)?),
                size,
                written,
                append,
                refused: None,
                opened: std::time::Instant::now(),
            });
        }
        if !truncate {
            let held = self
                .uploads
                .held(&self.peer.partner)
                .iter()
                .any(|(n, _)| n == name);
            if held || self.recent_size(name).is_some() {
                return Err(self.refused(
                    "resuming or appending to an upload already received",
                    &path,
                    StatusCode::Failure,
                    format!(
                        "{path} was already received{}; it cannot be resumed or appended to: upload the whole file again",
                        if held { " and is held for its counterpart" } else { " and taken" }
                    ),
                ));
            }
            if !pflags.contains(OpenFlags::CREATE) {
                return Err(refuse(
                    StatusCode::NoSuchFile,
                    format!("no such file: {path}"),
                ));
            }
        }
        let writer = self.uploads.new_upload(&self.peer.partner, name).map_err(|e| {
            tracing::error!(partner = %self.peer.partner, error = %e, "cannot create a spool file");
            refuse(StatusCode::Failure, "cannot accept uploads right now")
        })?;
        Ok(Upload {
            name: name.to_string(),
            writer: Some(self.write_behind(writer)?),
            size: 0,
            written: rangemap::RangeSet::new(),
            append,
            refused: None,
            opened: std::time::Instant::now(),
        })
    }

    /// An upload's writer, on a thread of its own.
    fn write_behind(&self, upload: Arriving) -> Result<WriteBehind, StatusReply> {
        WriteBehind::start(upload).map_err(|e| {
            tracing::error!(partner = %self.peer.partner, error = %e, "cannot start an upload's writer");
            refuse(StatusCode::Failure, "cannot accept uploads right now")
        })
    }

    /// Hand a complete upload to intake and turn the outcome into a status.
    async fn finish(
        &mut self,
        id: u32,
        name: String,
        upload: Arriving,
    ) -> Result<Status, StatusReply> {
        let size = upload.metadata().map(|m| m.len()).unwrap_or(0);
        let completed = self.uploads.complete(&self.peer, &name, upload).await;
        if completed.is_ok() {
            self.remember(&name, size);
        }
        match completed {
            Ok(Completion::Judged(out)) => Ok(status(
                id,
                &format!(
                    "file {}: {} ({}); receipt /receipts/{name}.verdict",
                    out.file_id, out.verdict, out.reason
                ),
            )),
            Ok(Completion::Recorded { file_id, judging }) => Ok(status(
                id,
                &if judging {
                    format!(
                        "file {file_id}: stored and recorded; still being judged, the verdict follows in /receipts/{name}.verdict"
                    )
                } else {
                    format!("file {file_id}: stored and recorded; judged later")
                },
            )),
            Ok(Completion::Held { waiting_for }) => Ok(status(
                id,
                &format!("held in /inbox until {waiting_for} arrives"),
            )),
            Err(e) => Err(refuse(StatusCode::Failure, e.to_string())),
        }
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        for open in self.handles.values() {
            if let Open::Delivery(c) = open {
                tracing::info!(
                    partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr,
                    delivery_id = c.delivery.id, name = %c.delivery.name.escape_debug(),
                    "session ended while a delivery was read; it stays waiting in /outbox"
                );
            }
            if let Open::Upload(u) = open
                && u.writer.is_some()
            {
                tracing::warn!(
                    partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr,
                    name = %u.name, bytes = u.size,
                    "session ended during an upload; the partial file is discarded, nothing recorded"
                );
            }
        }
        for name in self.parked.keys() {
            tracing::warn!(
                partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr, name = %name,
                "session ended before a temporary upload was renamed; it is discarded, nothing recorded"
            );
        }
        // The temp files are removed as their handles drop (an open
        // upload's by its writer, once the writes queued are done).
    }
}

impl russh_sftp::server::Handler for SftpSession {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        refuse(StatusCode::OpUnsupported, "not supported by settlegate")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let _busy = self.activity.busy();
        if self.initialized {
            return Err(refuse(StatusCode::BadMessage, "SFTP already initialised"));
        }
        self.initialized = true;
        let mut v = Version::new();
        for ext in [
            "posix-rename@openssh.com",
            "limits@openssh.com",
            "fsync@openssh.com",
        ] {
            v.extensions.insert(ext.into(), "1".into());
        }
        Ok(v)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let _busy = self.activity.busy();
        let loc = self.resolve(&path)?;
        Ok(Name {
            id,
            files: vec![File::dummy(loc.path())],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let _busy = self.activity.busy();
        let loc = self.resolve(&path)?;
        Ok(Attrs {
            id,
            attrs: self.stat_location(&loc).await?,
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let _busy = self.activity.busy();
        let attrs = match self.handles.get(&handle) {
            Some(Open::Upload(u)) => {
                let mut a = FileAttributes {
                    size: Some(u.size),
                    permissions: Some(0o644),
                    ..FileAttributes::default()
                };
                a.set_regular(true);
                a
            }
            Some(Open::Receipt(f)) => f
                .metadata()
                .map(|m| file_attrs(&m))
                .map_err(|e| refuse(StatusCode::Failure, e.to_string()))?,
            Some(Open::ReceiptText(_, a)) => a.clone(),
            Some(Open::Delivery(c)) => delivery_attrs(&c.delivery),
            Some(Open::Dir { .. }) => dir_attrs(),
            None => return Err(refuse(StatusCode::Failure, "no such handle")),
        };
        Ok(Attrs { id, attrs })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let _busy = self.activity.busy();
        let loc = self.resolve(&path)?;
        if !loc.is_dir() {
            self.stat_location(&loc).await?;
            return Err(refuse(
                StatusCode::Failure,
                format!("{} is not a directory", loc.path()),
            ));
        }
        let entries = self.listing(&loc).await?;
        let handle = self.add_handle(Open::Dir { entries, next: 0 })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let _busy = self.activity.busy();
        match self.handles.get_mut(&handle) {
            Some(Open::Dir { entries, next }) => {
                if *next >= entries.len() {
                    return Err(StatusCode::Eof.into());
                }
                let end = (*next + DIR_CHUNK).min(entries.len());
                let files = entries[*next..end].to_vec();
                *next = end;
                Ok(Name { id, files })
            }
            _ => Err(refuse(StatusCode::Failure, "not a directory handle")),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let _busy = self.activity.busy();
        let loc = self.resolve(&filename)?;
        let writing = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let open = match (&loc, writing) {
            (Location::InboxFile(name), true) => {
                Open::Upload(Box::new(self.open_upload(name, pflags)?))
            }
            (Location::ReceiptFile(name), false) if self.shared() => {
                let (text, attrs) = self.ledger_receipt(name).await?;
                Open::ReceiptText(text, attrs)
            }
            (Location::ReceiptFile(name), false) => Open::Receipt(self.open_receipt(name)?.0),
            (Location::OutboxFile(name), false) => {
                let delivery = self.outbox_entry(name).await?;
                let file = self.uploads.gw().open_delivery(&delivery).map_err(|e| {
                    tracing::error!(partner = %self.peer.partner, delivery_id = delivery.id, error = %e, "cannot open a delivery's stored bytes");
                    refuse(StatusCode::Failure, "the delivery cannot be read right now")
                })?;
                Open::Delivery(Box::new(Collecting {
                    delivery,
                    file,
                    read: Default::default(),
                }))
            }
            (Location::InboxFile(_), false) => {
                return Err(self.refused(
                    "reading back an upload",
                    &filename,
                    StatusCode::PermissionDenied,
                    "files in /inbox cannot be read back; see /receipts",
                ));
            }
            (l, _) if l.is_dir() => {
                return Err(refuse(
                    StatusCode::Failure,
                    format!("{} is a directory", l.path()),
                ));
            }
            (_, true) => {
                return Err(self.refused(
                    "a write outside /inbox",
                    &filename,
                    StatusCode::PermissionDenied,
                    "uploads go to /inbox; /receipts and /outbox are read-only",
                ));
            }
            (_, false) => return Err(refuse(StatusCode::NoSuchFile, "no such file")),
        };
        let handle = self.add_handle(open)?;
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        let max = self.max_file_bytes;
        let Some(Open::Upload(u)) = self.handles.get_mut(&handle) else {
            return Err(refuse(StatusCode::Failure, "not a handle open for writing"));
        };
        if let Some(why) = &u.refused {
            return Err(refuse(StatusCode::Failure, why.clone()));
        }
        // APPEND: the file's end, whatever offset the client sent.
        let offset = if u.append { u.size } else { offset };
        let end = offset.saturating_add(data.len() as u64);
        if end > max {
            let why = format!(
                "file exceeds the maximum size of {max} bytes; upload refused and discarded"
            );
            u.refused = Some(why.clone());
            // Discarded before the answer: nothing of it stays in the spool.
            if let Some(writer) = u.writer.take() {
                let _ = writer.finish().await;
            }
            let name = u.name.clone();
            tracing::warn!(partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr, name = %name.escape_debug(), max_bytes = max, "refused: upload larger than the maximum file size");
            return Err(refuse(StatusCode::Failure, why));
        }
        let Some(writer) = u.writer.take() else {
            return Err(refuse(StatusCode::Failure, "upload already refused"));
        };
        // Answered once queued: the disk, the checksum and the verifier
        // work behind the requests. A write that fails refuses the upload
        // at a later write or at the close, before anything is kept.
        if writer.write_at(offset, data).await {
            u.writer = Some(writer);
            u.size = u.size.max(end);
            if end > offset {
                u.written.insert(offset..end);
            }
            return Ok(status(id, "Ok"));
        }
        let error = match writer.finish().await {
            Err(e) => e.to_string(),
            Ok(_) => "the writer stopped".to_string(),
        };
        let why = spool_failed(&self.peer, &u.name, &error);
        u.refused = Some(why.clone());
        Err(refuse(StatusCode::Failure, why))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let _busy = self.activity.busy();
        let len = len.min(MAX_READ) as usize;
        let buf = match self.handles.get_mut(&handle) {
            Some(Open::Receipt(f)) => {
                let mut buf = vec![0u8; len];
                let n = f
                    .read_at(&mut buf, offset)
                    .map_err(|e| refuse(StatusCode::Failure, e.to_string()))?;
                buf.truncate(n);
                buf
            }
            Some(Open::ReceiptText(t, _)) => usize::try_from(offset)
                .ok()
                .and_then(|o| t.get(o..))
                .map(|rest| rest[..rest.len().min(len)].to_vec())
                .unwrap_or_default(),
            Some(Open::Delivery(c)) => c
                .read_at(offset, len)
                .map_err(|e| refuse(StatusCode::Failure, e.to_string()))?,
            _ => return Err(refuse(StatusCode::Failure, "not a handle open for reading")),
        };
        if buf.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data { id, data: buf })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        let Some(open) = self.handles.remove(&handle) else {
            return Err(refuse(StatusCode::Failure, "no such handle"));
        };
        match open {
            Open::Upload(u) => {
                if let Some(why) = u.refused {
                    return Err(refuse(StatusCode::Failure, why));
                }
                let Some(writer) = u.writer else {
                    return Err(refuse(StatusCode::Failure, "upload refused"));
                };
                let writer = match writer.finish().await {
                    Ok(w) => w,
                    Err(e) => {
                        let why = spool_failed(&self.peer, &u.name, &e.to_string());
                        return Err(refuse(StatusCode::Failure, why));
                    }
                };
                if let Some(gap) = u.written.gaps(&(0..u.size)).next() {
                    let path = format!("/inbox/{}", u.name);
                    return Err(self.refused(
                        "an upload with bytes never written",
                        &path,
                        StatusCode::Failure,
                        format!(
                            "bytes {}..{} of {path} were never written, so the file is not whole; nothing kept \
                             (a resumed upload can only continue a file still open or parked in this session): upload the whole file again",
                            gap.start, gap.end
                        ),
                    ));
                }
                if is_temporary(&u.name) {
                    // Complete once renamed to its final name.
                    self.parked.insert(u.name.clone(), writer);
                    return Ok(status(id, "temporary name: rename it to its final name"));
                }
                tracing::info!(
                    partner = %self.peer.partner, addr = %self.peer.addr, name = %u.name.escape_debug(), bytes = u.size,
                    transfer_ms = u.opened.elapsed().as_millis() as u64, "upload received; taking it"
                );
                self.finish(id, u.name, writer).await
            }
            Open::Delivery(c) => {
                let d = &c.delivery;
                if !c.complete() {
                    tracing::info!(
                        partner = %self.peer.partner, user = %self.peer.user, addr = %self.peer.addr,
                        delivery_id = d.id, name = %d.name.escape_debug(),
                        "a delivery was read in part; it stays waiting in /outbox"
                    );
                    return Ok(status(id, "Ok"));
                }
                let address = self.peer.addr.to_string();
                match self
                    .uploads
                    .gw()
                    .collected(d.id, &self.peer.user, &address)
                    .await
                {
                    Ok(_) => Ok(status(id, "Ok")),
                    Err(e) => {
                        tracing::error!(partner = %self.peer.partner, delivery_id = d.id, error = %e, "cannot record a collected delivery");
                        Err(refuse(
                            StatusCode::Failure,
                            "read, but the collection could not be recorded; read it again",
                        ))
                    }
                }
            }
            Open::Receipt(_) | Open::ReceiptText(..) | Open::Dir { .. } => Ok(status(id, "Ok")),
        }
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        let (from, to) = (self.resolve(&oldpath)?, self.resolve(&newpath)?);
        let path = format!("{oldpath} -> {newpath}");
        let (Location::InboxFile(from), Location::InboxFile(to)) = (from, to) else {
            return Err(self.refused(
                "rename",
                &path,
                StatusCode::PermissionDenied,
                "only an upload in /inbox under a temporary name can be renamed",
            ));
        };
        if is_temporary(&to) {
            return Err(self.refused(
                "rename",
                &path,
                StatusCode::PermissionDenied,
                format!("{to} is a temporary name; rename to the final name"),
            ));
        }
        let Some(upload) = self.parked.remove(&from) else {
            return Err(self.refused(
                "rename",
                &path,
                StatusCode::NoSuchFile,
                format!("no upload named /inbox/{from} waiting in this session"),
            ));
        };
        self.finish(id, to, upload).await
    }

    async fn setstat(
        &mut self,
        _id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "setstat",
            &path,
            StatusCode::PermissionDenied,
            "attributes cannot be changed",
        ))
    }

    async fn fsetstat(
        &mut self,
        _id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        let path = match self.handles.get(&handle) {
            Some(Open::Upload(u)) => format!("/inbox/{}", u.name),
            _ => format!("handle {handle}"),
        };
        Err(self.refused(
            "fsetstat",
            &path,
            StatusCode::PermissionDenied,
            "attributes cannot be changed",
        ))
    }

    async fn remove(&mut self, _id: u32, filename: String) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "remove",
            &filename,
            StatusCode::PermissionDenied,
            "files cannot be removed: every arrival is kept",
        ))
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "mkdir",
            &path,
            StatusCode::PermissionDenied,
            "directories cannot be created",
        ))
    }

    async fn rmdir(&mut self, _id: u32, path: String) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "rmdir",
            &path,
            StatusCode::PermissionDenied,
            "directories cannot be removed",
        ))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "symlink",
            &format!("{linkpath} -> {targetpath}"),
            StatusCode::PermissionDenied,
            "symbolic links are not allowed",
        ))
    }

    async fn readlink(&mut self, _id: u32, path: String) -> Result<Name, Self::Error> {
        let _busy = self.activity.busy();
        Err(self.refused(
            "readlink",
            &path,
            StatusCode::NoSuchFile,
            "there are no symbolic links",
        ))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        match request.as_str() {
            // Same rules as rename: a parked upload to its final name.
            "posix-rename@openssh.com" => {
                let mut r = data.as_slice();
                let (Some(from), Some(to)) = (ssh_string(&mut r), ssh_string(&mut r)) else {
                    return Err(refuse(
                        StatusCode::BadMessage,
                        "posix-rename: two paths expected",
                    ));
                };
                self.rename(id, from, to).await.map(Packet::Status)
            }
            "limits@openssh.com" => {
                let _busy = self.activity.busy();
                let mut out = Vec::with_capacity(32);
                for v in [
                    u64::from(MAX_PACKET),
                    u64::from(MAX_READ),
                    MAX_WRITE,
                    MAX_HANDLES as u64,
                ] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                Ok(Packet::ExtendedReply(ExtendedReply { id, data: out }))
            }
            // Uploads are made durable when they are taken (before the close
            // is answered); an fsync of an open upload has nothing to add,
            // unless a write to it has failed.
            "fsync@openssh.com" => {
                let _busy = self.activity.busy();
                let mut r = data.as_slice();
                match ssh_string(&mut r).and_then(|h| self.handles.get(&h)) {
                    // A refused upload has no writer.
                    Some(Open::Upload(u)) if u.writer.as_ref().is_some_and(|w| !w.stopped()) => {
                        Ok(Packet::Status(status(id, "Ok")))
                    }
                    Some(Open::Upload(_)) => Err(refuse(
                        StatusCode::Failure,
                        "fsync: the upload has failed; its close says why",
                    )),
                    _ => Err(refuse(StatusCode::Failure, "fsync: not an upload handle")),
                }
            }
            other => Err(self.refused(
                "an unsupported extension",
                other,
                StatusCode::OpUnsupported,
                format!("extension {other:?} is not supported by settlegate"),
            )),
        }
    }
}

/// Read one SSH string (u32 length, UTF-8 bytes) off the front of `r`.
fn ssh_string(r: &mut &[u8]) -> Option<String> {
    let (len, rest) = r.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    *r = rest;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    //! The SFTP handler without sockets: requests in, statuses out.
    use super::*;
    use russh_sftp::server::Handler;
    use sha2::{Digest, Sha256};

    async fn session(dir: &std::path::Path, max: u64) -> SftpSession {
        let formats = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
        let text = format!(
            "data_dir = {:?}\nformats_dir = {:?}\n[[partners]]\nid = \"cardco\"\nformats = [\"card-settlement\"]\n",
            dir.join("data").display().to_string(),
            formats.display().to_string()
        );
        let config =
            crate::config::Config::from_toml(&text, &dir.join("settlegate.toml")).expect("config");
        let gw = crate::intake::Gateway::open(config, Arc::new(crate::intake::SystemClock))
            .await
            .expect("gateway");
        let uploads = Arc::new(Uploads::new(
            Arc::new(gw),
            std::time::Duration::from_secs(10),
        ));
        uploads.prepare("cardco").expect("spool");
        let peer = Peer {
            partner: "cardco".into(),
            user: "cardco".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
        };
        SftpSession::new(uploads, peer, max, super::super::session::Activity::new())
    }

    fn code(r: StatusReply) -> StatusCode {
        r.status_code
    }

    fn spool_empty(dir: &std::path::Path) -> bool {
        std::fs::read_dir(dir.join("data/sftp/spool/cardco"))
            .expect("spool")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".upload-"))
    }

    /// The valid card-settlement fixture's bytes.
    fn valid_card() -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/card-settlement/valid-basic/CSTL_031_20261121_0001.dat"),
        )
        .expect("fixture")
    }

    const W: OpenFlags = OpenFlags::WRITE
        .union(OpenFlags::CREATE)
        .union(OpenFlags::TRUNCATE);

    /// Open `path` for a new upload; its handle.
    async fn upload(s: &mut SftpSession, id: u32, path: String) -> String {
        s.open(id, path, W, FileAttributes::default())
            .await
            .expect("open")
            .handle
    }

    #[tokio::test]
    async fn upload_close_judges_and_writes_the_receipt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = session(dir.path(), 1 << 20).await;
        let bytes = valid_card();
        let h = s
            .open(
                1,
                "/inbox/CSTL_031_20261121_0001.dat".into(),
                W,
                FileAttributes::default(),
            )
            .await
            .expect("open")
            .handle;
        assert!(h.chars().all(|c| c.is_ascii_digit()), "ASCII handles: {h}");
        // Written out of order, as pipelining clients do.
        let mid = bytes.len() / 2;
        s.write(2, h.clone(), mid as u64, bytes[mid..].to_vec())
            .await
            .expect("write");
        s.write(3, h.clone(), 0, bytes[..mid].to_vec())
            .await
            .expect("write");
        let st = s.close(4, h).await.expect("close");
        assert!(st.error_message.contains("fed"), "{}", st.error_message);
        let receipt = dir
            .path()
            .join("data/receipts/cardco/CSTL_031_20261121_0001.dat.verdict");
        assert!(
            std::fs::read_to_string(receipt)
                .expect("receipt")
                .contains("verdict=fed")
        );
        assert!(spool_empty(dir.path()));
        // Read back through /receipts, not through /inbox.
        let r = s
            .open(
                5,
                "receipts/CSTL_031_20261121_0001.dat.verdict".into(),
                OpenFlags::READ,
                FileAttributes::default(),
            )
            .await
            .expect("open receipt")
            .handle;
        let data = s.read(6, r.clone(), 0, 4096).await.expect("read").data;
        assert!(String::from_utf8_lossy(&data).contains("verdict=fed"));
        assert_eq!(
            code(s.read(7, r, 4096, 4096).await.expect_err("eof")),
            StatusCode::Eof
        );
        let e = s
            .open(
                8,
                "/inbox/CSTL_031_20261121_0001.dat".into(),
                OpenFlags::READ,
                FileAttributes::default(),
            )
            .await
            .expect_err("inbox is write-only");
        assert_eq!(code(e), StatusCode::PermissionDenied);
    }

    fn receipt_checksum(dir: &std::path::Path, name: &str) -> String {
        let text =
            std::fs::read_to_string(dir.join(format!("data/receipts/cardco/{name}.verdict")))
                .expect("receipt");
        text.lines()
            .find_map(|l| l.strip_prefix("checksum="))
            .expect("checksum line")
            .to_string()
    }

    /// In-order writes are hashed on the way in and the spool file is
    /// renamed into the store; a write that goes back over earlier bytes
    /// drops that shortcut, so the checksum is always of the bytes stored.
    #[tokio::test]
    async fn the_checksum_is_of_the_bytes_stored_whatever_the_write_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = session(dir.path(), 1 << 20).await;
        let bytes = valid_card();
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        // In order, in three writes.
        let name = "CSTL_031_20261121_0001.dat";
        let h = upload(&mut s, 1, format!("/inbox/{name}")).await;
        let third = bytes.len() / 3;
        for (i, (from, to)) in [(0, third), (third, 2 * third), (2 * third, bytes.len())]
            .into_iter()
            .enumerate()
        {
            s.write(
                2 + i as u32,
                h.clone(),
                from as u64,
                bytes[from..to].to_vec(),
            )
            .await
            .expect("write");
        }
        let st = s.close(5, h).await.expect("close");
        assert!(st.error_message.contains("fed"), "{}", st.error_message);
        assert_eq!(receipt_checksum(dir.path(), name), sha(&bytes));
        let stored = dir
            .path()
            .join("data/store")
            .join(&sha(&bytes)[..2])
            .join(sha(&bytes));
        assert_eq!(std::fs::read(stored).expect("blob"), bytes);
        assert!(spool_empty(dir.path()));

        // Written whole, then its first bytes written again with other
        // bytes: the file is what the last write left.
        let name = "CSTL_031_20261121_0002.dat";
        let h = s
            .open(6, format!("/inbox/{name}"), W, FileAttributes::default())
            .await
            .expect("open")
            .handle;
        s.write(7, h.clone(), 0, bytes.clone())
            .await
            .expect("write");
        s.write(8, h.clone(), 0, b"X".to_vec())
            .await
            .expect("write");
        s.close(9, h).await.expect("close");
        let mut changed = bytes.clone();
        changed[0] = b'X';
        assert_eq!(receipt_checksum(dir.path(), name), sha(&changed));
    }

    /// A file verified on its way in (written in order) and one verified
    /// from the store at the close (written out of order) get the same
    /// verdict and the same reason, down to the record and byte.
    #[tokio::test]
    async fn in_order_and_out_of_order_uploads_are_judged_alike() {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/card-settlement/bad-digit/CSTL_031_20261121_0001.dat"),
        )
        .expect("fixture");
        let mid = bytes.len() / 2;
        let mut answers = Vec::new();
        for order in [
            [(0, mid), (mid, bytes.len())],
            [(mid, bytes.len()), (0, mid)],
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut s = session(dir.path(), 1 << 20).await;
            let h = s
                .open(
                    1,
                    "/inbox/CSTL_031_20261121_0001.dat".into(),
                    W,
                    FileAttributes::default(),
                )
                .await
                .expect("open")
                .handle;
            for (i, (from, to)) in order.into_iter().enumerate() {
                s.write(
                    2 + i as u32,
                    h.clone(),
                    from as u64,
                    bytes[from..to].to_vec(),
                )
                .await
                .expect("write");
            }
            let st = s.close(4, h).await.expect("close");
            assert!(st.error_message.contains("invalid"), "{}", st.error_message);
            let receipt = std::fs::read_to_string(
                dir.path()
                    .join("data/receipts/cardco/CSTL_031_20261121_0001.dat.verdict"),
            )
            .expect("receipt");
            answers.push((st.error_message, receipt));
        }
        assert_eq!(answers[0], answers[1]);
    }

    #[tokio::test]
    async fn refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = session(dir.path(), 10).await;
        let a = FileAttributes::default;
        let e = s
            .open(1, "/etc/passwd".into(), OpenFlags::READ, a())
            .await
            .expect_err("escape");
        assert_eq!(code(e), StatusCode::NoSuchFile);
        let e = s
            .open(1, "/receipts/x".into(), W, a())
            .await
            .expect_err("write receipts");
        assert_eq!(code(e), StatusCode::PermissionDenied);
        let e = s
            .open(1, "/inbox/\u{FFFD}.dat".into(), W, a())
            .await
            .expect_err("lossy name");
        assert!(e.error_message.as_deref().unwrap_or("").contains("UTF-8"));
        assert_eq!(
            code(s.remove(1, "/inbox/x".into()).await.expect_err("rm")),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            code(s.mkdir(1, "/inbox/d".into(), a()).await.expect_err("mkdir")),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            code(
                s.symlink(1, "/inbox/l".into(), "/etc".into())
                    .await
                    .expect_err("ln")
            ),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            code(
                s.setstat(1, "/inbox".into(), a())
                    .await
                    .expect_err("setstat")
            ),
            StatusCode::PermissionDenied
        );
        assert_eq!(
            s.realpath(1, "../../etc/..".into())
                .await
                .expect("realpath")
                .files[0]
                .filename,
            "/"
        );
        // Over the maximum size: the write fails, the close fails, nothing kept.
        let h = s
            .open(2, "/inbox/big.dat".into(), W, a())
            .await
            .expect("open")
            .handle;
        s.write(3, h.clone(), 0, vec![b'x'; 10])
            .await
            .expect("within the limit");
        assert_eq!(
            code(
                s.write(4, h.clone(), 10, vec![b'x'])
                    .await
                    .expect_err("over")
            ),
            StatusCode::Failure
        );
        assert_eq!(
            code(s.close(5, h).await.expect_err("refused upload")),
            StatusCode::Failure
        );
        assert!(spool_empty(dir.path()));
        // A session dropped with an upload open leaves no partial file.
        let h = s
            .open(6, "/inbox/cut.dat".into(), W, a())
            .await
            .expect("open")
            .handle;
        s.write(7, h, 0, vec![b'x'; 5]).await.expect("write");
        assert!(!spool_empty(dir.path()));
        drop(s);
        // The writer behind the session ends on its own thread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !spool_empty(dir.path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the partial upload is still in the spool"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A write the disk refuses fails the upload, at a later write or at
    /// the close: nothing is recorded and nothing stays in the spool.
    #[tokio::test]
    async fn a_failed_spool_write_refuses_the_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = session(dir.path(), u64::MAX).await;
        let name = "CSTL_031_20261121_0001.dat";
        let h = upload(&mut s, 1, format!("/inbox/{name}")).await;
        s.write(2, h.clone(), 0, valid_card())
            .await
            .expect("a write that succeeds");
        // No file has an offset this large: the spool's write fails, after
        // its answer (a write is answered once queued).
        s.write(3, h.clone(), 1 << 63, b"x".to_vec())
            .await
            .expect("queued");
        let e = s.close(4, h).await.expect_err("close of a failed upload");
        assert_eq!(e.status_code, StatusCode::Failure);
        let message = e.error_message.unwrap_or_default();
        assert!(
            message.starts_with("cannot write the upload: content store: cannot write to"),
            "{message}"
        );
        assert!(spool_empty(dir.path()));
        assert!(
            !dir.path()
                .join(format!("data/receipts/cardco/{name}.verdict"))
                .exists()
        );
        let files = s
            .uploads
            .gw()
            .ledger
            .files(&crate::ledger::FileFilter::default())
            .await
            .expect("files");
        assert!(files.is_empty(), "nothing recorded: {files:?}");
    }

    /// Once the writer has stopped on a failed write, later writes and an
    /// fsync are refused, saying why, and so is the close.
    #[tokio::test]
    async fn writes_after_a_failed_one_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = session(dir.path(), u64::MAX).await;
        let h = upload(&mut s, 1, "/inbox/x.dat".into()).await;
        s.write(2, h.clone(), 1 << 63, b"x".to_vec())
            .await
            .expect("queued");
        let mut id = 3;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let refused = loop {
            match s.write(id, h.clone(), 0, b"y".to_vec()).await {
                Err(e) => break e,
                Ok(_) => assert!(
                    std::time::Instant::now() < deadline,
                    "writes still taken after the failed one"
                ),
            }
            id += 1;
        };
        assert_eq!(refused.status_code, StatusCode::Failure);
        let why = refused.error_message.unwrap_or_default();
        assert!(why.starts_with("cannot write the upload: "), "{why}");
        let mut handle = (h.len() as u32).to_be_bytes().to_vec();
        handle.extend_from_slice(h.as_bytes());
        let fsync = s
            .extended(id + 1, "fsync@openssh.com".into(), handle)
            .await
            .expect_err("fsync of a failed upload");
        assert_eq!(fsync.status_code, StatusCode::Failure);
        let e = s.close(id + 2, h).await.expect_err("close");
        assert_eq!(e.error_message.unwrap_or_default(), why);
        assert!(spool_empty(dir.path()));
    }
}
