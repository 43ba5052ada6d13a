//! The content fingerprint: SHA-256 over the canonical content, with the
//! data records combined order-insensitively (each record's digest added
//! modulo 2^256), so the same data re-sent in another order, with other
//! padding, line endings or encoding is recognised. Record digests go
//! through [`ShortSha256`], a SHA-256 padded by hand for short messages.

use sha2::{Digest, Sha256};

use super::super::codec;
use super::super::codec::Value;
use super::super::rules::RecordRef;

/// Order-insensitive content fingerprint: each data record's canonical form
/// is hashed and the digests are added modulo 2^256, so reordering records
/// does not change the sum while any change to a record does. Header,
/// trailer and file-name fields are hashed in order on top.
pub(super) struct Fingerprint {
    fixed_parts: Sha256,
    pub(super) sum: [u64; 4],
    pub(super) count: u64,
    canon: Vec<u8>,
    record_hash: ShortSha256,
}

impl Fingerprint {
    pub(super) fn new() -> Self {
        Fingerprint {
            fixed_parts: Sha256::new(),
            sum: [0; 4],
            count: 0,
            canon: Vec::with_capacity(256),
            record_hash: ShortSha256::default(),
        }
    }

    /// Canonical form of a record's non-volatile fields into `self.canon`.
    fn canonicalise(&mut self, rec: RecordRef<'_>) {
        self.canon.clear();
        self.canon.extend_from_slice(&rec.def.code);
        self.canon.push(0x1e);
        for (i, f) in rec.def.fields.iter().enumerate() {
            if f.volatile {
                continue;
            }
            let negative = f
                .sign
                .is_some_and(|s| rec.fields[s].value == Value::Sign(true));
            codec::canonical(&rec.fields[i].value, rec.text(i), negative, &mut self.canon);
            self.canon.push(0x1f);
        }
    }

    pub(super) fn add_ordered(&mut self, tag: &str, rec: RecordRef<'_>) {
        self.canonicalise(rec);
        self.fixed_parts.update(tag.as_bytes());
        self.fixed_parts.update([0]);
        self.fixed_parts.update(&self.canon);
        self.fixed_parts.update([0]);
    }

    pub(super) fn add_data(&mut self, rec: RecordRef<'_>) {
        self.canonicalise(rec);
        let canon = std::mem::take(&mut self.canon);
        self.add_canonical(&canon);
        self.canon = canon;
    }

    /// Add a data record by its canonical form.
    pub(super) fn add_canonical(&mut self, canon: &[u8]) {
        let digest = self.record_hash.digest(canon);
        let mut limbs = [0u64; 4];
        for (limb, part) in limbs.iter_mut().zip(digest.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(part);
            *limb = u64::from_le_bytes(bytes);
        }
        self.add_sum(limbs, 1);
    }

    /// Add digests (or another run's sum of them) modulo 2^256.
    pub(super) fn add_sum(&mut self, limbs: [u64; 4], count: u64) {
        let mut carry = 0u64;
        for (limb, add) in self.sum.iter_mut().zip(limbs) {
            let (a, c1) = limb.overflowing_add(add);
            let (b, c2) = a.overflowing_add(carry);
            *limb = b;
            carry = u64::from(c1) + u64::from(c2);
        }
        self.count += count;
    }

    pub(super) fn finish(self, format: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"settlegate.fingerprint.v1\0");
        h.update(format.as_bytes());
        h.update([0]);
        h.update(self.fixed_parts.finalize());
        h.update(self.count.to_be_bytes());
        for limb in self.sum {
            h.update(limb.to_le_bytes());
        }
        h.finalize().into()
    }
}

/// One SHA-256 block.
type Sha256Block = sha2::digest::core_api::Block<sha2::Sha256VarCore>;

/// SHA-256 of short messages (a record's canonical form: two blocks, most
/// often), the same digest as `Sha256::digest`. The message is padded here
/// and all its blocks go to the compression function in one call, which
/// saves a sixth of the hashing time per record; the blocks are reused.
#[derive(Debug, Default)]
struct ShortSha256 {
    blocks: Vec<Sha256Block>,
}

impl ShortSha256 {
    const INITIAL: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    fn digest(&mut self, message: &[u8]) -> [u8; 32] {
        // FIPS 180-4 padding: 0x80, zeros, then the length in bits as a
        // big-endian u64 ending a block.
        let blocks = (message.len() + 1 + 8).div_ceil(64);
        self.blocks.clear();
        self.blocks.resize(blocks, Sha256Block::default());
        for (block, part) in self.blocks.iter_mut().zip(message.chunks(64)) {
            block[..part.len()].copy_from_slice(part);
        }
        // There is room: the blocks hold the message and nine bytes more.
        if let Some(block) = self.blocks.get_mut(message.len() / 64) {
            block[message.len() % 64] = 0x80;
        }
        let bits = (message.len() as u64).wrapping_mul(8).to_be_bytes();
        if let Some(last) = self.blocks.last_mut() {
            last[56..].copy_from_slice(&bits);
        }
        let mut state = Self::INITIAL;
        sha2::compress256(&mut state, &self.blocks);
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_hash_as_sha256() {
        let mut short = ShortSha256::default();
        let message: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..=message.len() {
            let expected: [u8; 32] = Sha256::digest(&message[..len]).into();
            assert_eq!(short.digest(&message[..len]), expected, "length {len}");
        }
    }
}
