//! One upload to a partner's SFTP server: the final name checked to be free
//! (unless the endpoint may overwrite), the bytes written under a temporary
//! name with many writes in flight (spread over several SFTP sessions on
//! the connection for a large file), the size checked by `stat`, a rename to
//! the final name, then the control file the same way and an optional done
//! marker. How far it got is recorded before each step, so a crash is
//! resolved without a second copy (see [`super::state`]).

use std::time::{Duration, Instant};

use futures::StreamExt;
use std::sync::Arc;

use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use crate::channels::ssh::{SftpConnection, SshError};
use crate::config::Upload;
use crate::intake::Gateway;
use crate::ledger::{DeliveryRow, LedgerError};
use crate::model::UploadProgress;
use crate::stage::StoreError;

/// Writes in flight at most per SFTP session: 64 writes of up to 255 KiB
/// fill a 16 MiB window.
const WRITES_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{addr}: {op} {path}: {source}")]
    Sftp {
        addr: String,
        op: &'static str,
        path: String,
        source: SftpError,
    },
    #[error(
        "{addr}: {path} already exists on the partner's side; it is not replaced (an endpoint with overwrite = true replaces it)"
    )]
    FinalExists { addr: String, path: String },
    #[error(
        "{addr}: {path}: the partner's side holds {found} bytes after the upload, not {expected}"
    )]
    SizeMismatch {
        addr: String,
        path: String,
        found: u64,
        expected: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl UploadError {
    /// A fault of the link or the partner's server, worth the endpoint's
    /// retries; a final name already taken stays taken.
    pub fn is_retried(&self) -> bool {
        !matches!(
            self,
            UploadError::FinalExists { .. } | UploadError::Store(_) | UploadError::Ledger(_)
        )
    }

    /// The endpoint could not be reached or refused us (connection, host
    /// key, login): nothing was written on its side.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UploadError::Ssh(_))
    }
}

fn sftp_err(addr: &str, op: &'static str, path: &str) -> impl FnOnce(SftpError) -> UploadError {
    let (addr, path) = (addr.to_string(), path.to_string());
    move |source| UploadError::Sftp {
        addr,
        op,
        path,
        source,
    }
}

/// `dir/name` as the server expects it.
pub fn remote_path(dir: &str, name: &str) -> String {
    match dir {
        "" | "." => name.to_string(),
        d => format!("{}/{name}", d.trim_end_matches('/')),
    }
}

/// The size of a remote file, `None` when there is no such file.
pub async fn remote_size(conn: &SftpConnection, path: &str) -> Result<Option<u64>, UploadError> {
    match conn.sftp.stat(path).await {
        Ok(a) => Ok(Some(a.attrs.size.unwrap_or(0))),
        Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
        Err(e) => Err(sftp_err(&conn.addr, "stat", path)(e)),
    }
}

/// Remove a remote file if it is there.
pub async fn remove_if_there(conn: &SftpConnection, path: &str) -> Result<(), UploadError> {
    match conn.sftp.remove(path).await {
        Ok(_) => Ok(()),
        Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(()),
        Err(e) => Err(sftp_err(&conn.addr, "remove", path)(e)),
    }
}

/// Deliver `d` through `conn` into `up.dir`; returns the final path.
pub async fn upload(
    gw: &Gateway,
    conn: &SftpConnection,
    up: &Upload,
    d: &DeliveryRow,
) -> Result<String, UploadError> {
    let final_path = remote_path(&up.dir, &d.name);
    let temp_path = remote_path(&up.dir, &up.temp_name(&d.name));
    let control = d.control_name.as_deref().zip(d.control_checksum.as_deref());
    if !up.overwrite {
        for name in std::iter::once(d.name.as_str()).chain(control.map(|c| c.0)) {
            let path = remote_path(&up.dir, name);
            if remote_size(conn, &path).await?.is_some() {
                return Err(UploadError::FinalExists {
                    addr: conn.addr.clone(),
                    path,
                });
            }
        }
    }
    let now = || gw.clock.now();
    let owner = crate::intake::process_owner();
    gw.ledger
        .set_progress(d.id, owner, UploadProgress::Checked, &temp_path, now())
        .await?;
    put(
        gw,
        conn,
        &d.checksum,
        d.size as u64,
        &temp_path,
        up.channels,
    )
    .await?;
    if let Some((name, checksum)) = control {
        let size = gw.store.size_of(checksum)?.unwrap_or(0);
        put(
            gw,
            conn,
            checksum,
            size,
            &remote_path(&up.dir, &up.temp_name(name)),
            up.channels,
        )
        .await?;
    }
    gw.ledger
        .set_progress(d.id, owner, UploadProgress::Uploaded, &temp_path, now())
        .await?;
    finish(conn, up, d).await?;
    gw.ledger
        .set_progress(d.id, owner, UploadProgress::Renamed, &final_path, now())
        .await?;
    Ok(final_path)
}

/// Into place: the data file, then its control file (partners take the
/// control file as the sign the data is complete), then the done marker.
/// Each step is skipped when it was done already (finishing after a crash).
pub async fn finish(
    conn: &SftpConnection,
    up: &Upload,
    d: &DeliveryRow,
) -> Result<(), UploadError> {
    for name in std::iter::once(d.name.as_str()).chain(d.control_name.as_deref()) {
        let (temp, fin) = (
            remote_path(&up.dir, &up.temp_name(name)),
            remote_path(&up.dir, name),
        );
        if remote_size(conn, &temp).await?.is_some() {
            rename(conn, &temp, &fin, up.overwrite).await?;
        }
    }
    if let Some(sfx) = &up.done_suffix {
        let marker = remote_path(&up.dir, &format!("{}{sfx}", d.name));
        if remote_size(conn, &marker).await?.is_none() {
            let h = conn
                .sftp
                .open(
                    marker.as_str(),
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                    FileAttributes::default(),
                )
                .await
                .map_err(sftp_err(&conn.addr, "create the done marker", &marker))?
                .handle;
            conn.sftp.close(h).await.map_err(sftp_err(
                &conn.addr,
                "close the done marker",
                &marker,
            ))?;
        }
    }
    Ok(())
}

/// Rename into place. Without overwrite: SFTP's plain rename, which fails
/// when the final name exists (never replaces what the partner has). With
/// it: `posix-rename@openssh.com` when offered, replacing atomically.
async fn rename(
    conn: &SftpConnection,
    from: &str,
    to: &str,
    overwrite: bool,
) -> Result<(), UploadError> {
    if overwrite && conn.posix_rename {
        let mut data = Vec::new();
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let reply = conn
            .sftp
            .extended("posix-rename@openssh.com", data)
            .await
            .map_err(sftp_err(&conn.addr, "rename", from))?;
        return match reply {
            russh_sftp::protocol::Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
            russh_sftp::protocol::Packet::Status(s) => {
                Err(sftp_err(&conn.addr, "rename", &format!("{from} → {to}"))(
                    SftpError::Status(s),
                ))
            }
            _ => Err(sftp_err(&conn.addr, "rename", from)(
                SftpError::UnexpectedPacket,
            )),
        };
    }
    if overwrite {
        remove_if_there(conn, to).await?;
    }
    conn.sftp
        .rename(from, to)
        .await
        .map(|_| ())
        .map_err(sftp_err(&conn.addr, "rename", &format!("{from} → {to}")))
}

/// How many writes to keep in flight given what the link has carried so
/// far: each must be answered within the I/O timeout, and replies queue
/// behind each other, so only what the link has shown it carries in half
/// that time goes out (one to start, widened from the first reply).
fn writes_in_flight(sent: u64, elapsed: Duration, io_timeout: Duration, len: u64) -> usize {
    if sent == 0 || len == 0 {
        return 1;
    }
    let rate = sent as f64 / elapsed.as_secs_f64().max(1e-3);
    let carried = rate * io_timeout.as_secs_f64() / 2.0;
    ((carried / len as f64) as usize).clamp(1, WRITES_IN_FLIGHT)
}

/// Files smaller than this go through one SFTP session: opening more costs
/// round trips that a small file does not win back.
const SPREAD_FROM_BYTES: u64 = 16 * 1024 * 1024;

/// One SFTP session writing a share of a file, through its own handle.
struct Lane {
    sftp: Arc<RawSftpSession>,
    handle: String,
    in_flight: usize,
    acked: u64,
}

/// Write a stored blob to `path` on the partner's side (created or
/// truncated) through up to `channels` SFTP sessions at once, each writing
/// its share of the blocks at their own offsets, then check its size there.
async fn put(
    gw: &Gateway,
    conn: &SftpConnection,
    checksum: &str,
    size: u64,
    path: &str,
    channels: usize,
) -> Result<(), UploadError> {
    let addr = conn.addr.as_str();
    let sessions = conn
        .sessions(if size >= SPREAD_FROM_BYTES {
            channels
        } else {
            1
        })
        .await;
    let mut lanes = Vec::with_capacity(sessions.len());
    let mut opened = Ok(());
    for (i, sftp) in sessions.into_iter().enumerate() {
        // The first open creates (or truncates) the file; the others only
        // open it again for writing.
        let flags = if i == 0 {
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
        } else {
            OpenFlags::WRITE
        };
        match sftp.open(path, flags, FileAttributes::default()).await {
            Ok(h) => lanes.push(Lane {
                sftp,
                handle: h.handle,
                in_flight: 0,
                acked: 0,
            }),
            Err(e) if i == 0 => {
                opened = Err(sftp_err(addr, "open", path)(e));
                break;
            }
            // Some servers refuse a second open of a file being written
            // (a share lock): the upload goes through the handles it has.
            Err(e) => {
                tracing::debug!(addr, path, sessions = lanes.len(), error = %e, "a further handle on the temporary file refused");
                break;
            }
        }
    }
    let written = match opened {
        Ok(()) => write_all(gw, conn, &mut lanes, checksum, size, path).await,
        Err(e) => Err(e),
    };
    let mut closed = Ok(());
    for lane in &lanes {
        if let Err(e) = lane.sftp.close(lane.handle.as_str()).await {
            closed = closed.and(Err(e));
        }
    }
    written?;
    closed.map_err(sftp_err(addr, "close", path))?;
    let found = remote_size(conn, path).await?.unwrap_or(0);
    if found != size {
        return Err(UploadError::SizeMismatch {
            addr: addr.to_string(),
            path: path.to_string(),
            found,
            expected: size,
        });
    }
    Ok(())
}

async fn write_all(
    gw: &Gateway,
    conn: &SftpConnection,
    lanes: &mut [Lane],
    checksum: &str,
    size: u64,
    path: &str,
) -> Result<(), UploadError> {
    let addr = conn.addr.as_str();
    let len = u64::from(conn.write_len.max(1));
    // The blob is read on a blocking thread, a few blocks ahead.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let mut file = gw.store.open_blob(checksum)?;
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; len as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.blocking_send(Ok(buf)).is_err() {
                return;
            }
        }
    });
    let mut writes = futures::stream::FuturesUnordered::new();
    let (started, mut offset) = (Instant::now(), 0u64);
    let mut source_done = false;
    let blob_path = gw.store.path_of(checksum);
    let result = 'upload: loop {
        while !source_done {
            // The lane with the most room under its own window takes the
            // next block.
            let room = |l: &Lane| {
                writes_in_flight(l.acked, started.elapsed(), conn.io_timeout, len)
                    .saturating_sub(l.in_flight)
            };
            let Some((i, _)) = lanes
                .iter()
                .enumerate()
                .map(|(i, l)| (i, room(l)))
                .filter(|(_, r)| *r > 0)
                .max_by_key(|(_, r)| *r)
            else {
                break;
            };
            match rx.recv().await {
                Some(Ok(block)) => {
                    let lane = &mut lanes[i];
                    lane.in_flight += 1;
                    let (sftp, h, at, n) =
                        (lane.sftp.clone(), lane.handle.clone(), offset, block.len());
                    offset += n as u64;
                    writes.push(async move { (i, n, sftp.write(h, at, block).await) });
                }
                Some(Err(source)) => {
                    break 'upload Err(UploadError::Store(StoreError {
                        action: "read",
                        path: blob_path,
                        source,
                    }));
                }
                None => source_done = true,
            }
        }
        let Some((i, n, r)) = writes.next().await else {
            break Ok(());
        };
        if let Err(e) = r {
            break Err(sftp_err(addr, "write", path)(e));
        }
        lanes[i].in_flight -= 1;
        lanes[i].acked += n as u64;
    };
    drop(rx);
    let _ = reader.await;
    result?;
    if offset != size {
        return Err(UploadError::Store(StoreError {
            action: "read",
            path: gw.store.path_of(checksum),
            source: std::io::Error::other(format!(
                "the stored blob has {offset} bytes, the delivery {size}"
            )),
        }));
    }
    Ok(())
}

/// Connect to an endpoint, retried with its back-off.
pub async fn connect(ep: &crate::config::Endpoint) -> Result<SftpConnection, UploadError> {
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(ep.retry.initial)
            .with_max_delay(ep.retry.max)
            .with_max_times(ep.retry.retries as usize)
            .with_jitter(),
    );
    loop {
        match SftpConnection::open(ep).await {
            Ok(c) => return Ok(c),
            Err(e) => match delays.next() {
                Some(d) if e.is_transient() => {
                    tracing::warn!(endpoint = %ep.name, retry_in = ?d, error = %e, "cannot reach the endpoint; retrying");
                    tokio::time::sleep(d).await;
                }
                _ => return Err(e.into()),
            },
        }
    }
}
