//! The SFTP request loop of one session: read a packet, hand it to the
//! handler, write the answer. russh-sftp decodes and encodes the packets;
//! this loop owns the framing so that a packet it cannot decode is answered
//! with that request's id (a client waits for that id, and would otherwise
//! hang until its timeout), and an oversized packet ends the session instead
//! of leaving the stream out of step.

use bytes::Bytes;
use russh_sftp::protocol::{Packet, Status, StatusCode};
use russh_sftp::server::{Handler, StatusReply};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Turn a handler's answer into the packet sent back.
fn answer<T: Into<Packet>>(id: u32, r: Result<T, StatusReply>) -> Packet {
    match r {
        Ok(p) => p.into(),
        Err(e) => {
            let code = e.status_code;
            Packet::Status(Status {
                id,
                status_code: code,
                error_message: e.error_message.unwrap_or_else(|| code.to_string()),
                language_tag: e.language_tag.unwrap_or_else(|| "en-US".into()),
            })
        }
    }
}

/// The request id of a raw packet (type byte, then the id), when there is one.
pub fn request_id(body: &[u8]) -> u32 {
    match body {
        // INIT carries a version where the others carry an id.
        [1, ..] => 0,
        [_, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

async fn dispatch<H>(h: &mut H, packet: Packet) -> Packet
where
    H: Handler<Error = StatusReply> + Send,
{
    let id = packet.get_request_id();
    match packet {
        Packet::Init(p) => answer(0, h.init(p.version, p.extensions).await),
        Packet::Open(p) => answer(id, h.open(p.id, p.filename, p.pflags, p.attrs).await),
        Packet::Close(p) => answer(id, h.close(p.id, p.handle).await),
        Packet::Read(p) => answer(id, h.read(p.id, p.handle, p.offset, p.len).await),
        Packet::Write(p) => answer(id, h.write(p.id, p.handle, p.offset, p.data).await),
        Packet::Lstat(p) => answer(id, h.lstat(p.id, p.path).await),
        Packet::Fstat(p) => answer(id, h.fstat(p.id, p.handle).await),
        Packet::SetStat(p) => answer(id, h.setstat(p.id, p.path, p.attrs).await),
        Packet::FSetStat(p) => answer(id, h.fsetstat(p.id, p.handle, p.attrs).await),
        Packet::OpenDir(p) => answer(id, h.opendir(p.id, p.path).await),
        Packet::ReadDir(p) => answer(id, h.readdir(p.id, p.handle).await),
        Packet::Remove(p) => answer(id, h.remove(p.id, p.filename).await),
        Packet::MkDir(p) => answer(id, h.mkdir(p.id, p.path, p.attrs).await),
        Packet::RmDir(p) => answer(id, h.rmdir(p.id, p.path).await),
        Packet::RealPath(p) => answer(id, h.realpath(p.id, p.path).await),
        Packet::Stat(p) => answer(id, h.stat(p.id, p.path).await),
        Packet::Rename(p) => answer(id, h.rename(p.id, p.oldpath, p.newpath).await),
        Packet::ReadLink(p) => answer(id, h.readlink(p.id, p.path).await),
        Packet::Symlink(p) => answer(id, h.symlink(p.id, p.linkpath, p.targetpath).await),
        Packet::Extended(p) => answer(id, h.extended(p.id, p.request, p.data).await),
        // Answers (VERSION, STATUS, DATA, …) are not requests.
        _ => Packet::status(id, StatusCode::BadMessage, "not a request packet", "en-US"),
    }
}

/// Why the loop ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("packet of {0} bytes is larger than the {1} accepted")]
    TooLong(u32, u32),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot encode an answer: {0}")]
    Encode(String),
}

/// Serve requests until the client closes the stream. `malformed` is
/// called with the request id of each packet that could not be decoded.
pub async fn serve<S, H>(
    mut stream: S,
    handler: &mut H,
    max_packet: u32,
    mut malformed: impl FnMut(u32, &str),
) -> Result<(), WireError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler<Error = StatusReply> + Send,
{
    loop {
        let len = match stream.read_u32().await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if len > max_packet {
            return Err(WireError::TooLong(len, max_packet));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        let id = request_id(&body);
        let reply = match Packet::try_from(&mut Bytes::from(body)) {
            Ok(request) => dispatch(handler, request).await,
            Err(e) => {
                let why = e.to_string();
                malformed(id, &why);
                Packet::status(
                    id,
                    StatusCode::BadMessage,
                    &format!("malformed request: {why}"),
                    "en-US",
                )
            }
        };
        let bytes = Bytes::try_from(reply).map_err(|e| WireError::Encode(e.to_string()))?;
        stream.write_all(&bytes).await?;
        stream.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_of_raw_packets() {
        // OPEN (3), id 7, then garbage.
        assert_eq!(request_id(&[3, 0, 0, 0, 7, 0xff]), 7);
        assert_eq!(request_id(&[1, 0, 0, 0, 3]), 0);
        assert_eq!(request_id(&[3, 0, 0]), 0);
        assert_eq!(request_id(&[]), 0);
    }
}
