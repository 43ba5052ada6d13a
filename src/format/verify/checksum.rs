//! The file's checksum, SHA-256 of its raw bytes. It is computed on its own
//! thread while the others parse (on large files the two take comparable
//! time): the readers hand it every block they read, in file order.

use std::io::{self, Read};
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use sha2::{Digest, Sha256};

/// Bytes on their way to the checksum thread: a shared buffer and the part
/// of it that is file content, in file order.
pub(super) type Block = (Arc<Vec<u8>>, Range<usize>);

/// Hands a copy of everything read through it to the checksum thread.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) tx: std::sync::mpsc::SyncSender<Block>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n > 0 {
            self.tx
                .send((Arc::new(buf[..n].to_vec()), 0..n))
                .map_err(|_| io::Error::other("the checksum thread stopped"))?;
        }
        Ok(n)
    }
}

/// The checksum thread: SHA-256 and size of the blocks it is sent, until
/// the senders are gone.
pub(super) fn of_blocks(blocks: Receiver<Block>) -> ([u8; 32], u64) {
    let mut h = Sha256::new();
    let mut size = 0u64;
    for (block, range) in blocks {
        size += range.len() as u64;
        h.update(&block[range]);
    }
    (<[u8; 32]>::from(h.finalize()), size)
}
