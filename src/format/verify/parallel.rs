//! The fixed-width pass spread over threads, for plain verification (no
//! record sink). The file's result is the same as the in-order pass's, error
//! for error: that pass stays the reference, and this one only saves it work.
//!
//! The reading thread cuts the file into chunks at record boundaries and
//! hands each to a worker, which checks the chunk's records on its own as if
//! they were all data records in the middle of a file. Data records depend on
//! each other only through the sequence numbers and the running control
//! totals, and the fingerprint adds record digests in any order, so a chunk's
//! result (first and last sequence numbers, partial sums, digest sum, drill
//! signals) can be merged in file order. A chunk that holds anything else —
//! the header, the trailer, an invalid record, a sequence break at its start,
//! a sum that could overflow — is checked again, in order, by the merging
//! thread with the file's real state, so every error is found and worded
//! exactly as the in-order pass finds it.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, LazyLock, Mutex};

use rust_decimal::Decimal;

use super::super::spec::{FixedLayout, FormatSpec, Terminator};
use super::fixed::{fixed_end, fixed_records, read_full};
use super::{Block, FileContext, Phase, State, Stop};

/// How the fixed-width pass is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// Threads checking chunks (besides the reading, merging and checksum
    /// threads, which mostly wait). One means the in-order pass.
    pub workers: usize,
    /// Bytes read at a time; a chunk is this much, cut back to a record boundary.
    pub chunk_bytes: usize,
}

impl Parallelism {
    /// The in-order pass on the calling thread (and the checksum thread).
    pub const SEQUENTIAL: Parallelism = Parallelism {
        workers: 1,
        chunk_bytes: super::CHUNK,
    };

    /// One worker per CPU the process may use.
    pub fn available() -> Parallelism {
        Parallelism {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            chunk_bytes: super::CHUNK,
        }
    }
}

/// Chunk workers shared by the files a process verifies at the same time
/// (a gateway judging many uploads at once): each file takes what is free,
/// up to one worker per CPU in all, and a file that finds fewer than two free
/// is checked in order. So the CPUs are not oversubscribed and the chunk
/// buffers (a few tens of MiB per file checked in chunks) stay bounded. It
/// only spreads work; no result depends on it.
pub(super) struct WorkerBudget {
    in_use: AtomicUsize,
    cap: usize,
}

/// The process's budget: one worker per CPU the process may use.
pub(super) static WORKERS: LazyLock<WorkerBudget> = LazyLock::new(|| WorkerBudget {
    in_use: AtomicUsize::new(0),
    cap: Parallelism::available().workers,
});

/// Workers taken from a [`WorkerBudget`], given back when dropped.
pub(super) struct Workers<'b> {
    budget: &'b WorkerBudget,
    pub(super) count: usize,
}

impl WorkerBudget {
    /// Take up to `wanted` workers, or none when fewer than two are free.
    pub(super) fn take(&self, wanted: usize) -> Workers<'_> {
        let mut in_use = self.in_use.load(Ordering::Relaxed);
        loop {
            let count = wanted.min(self.cap.saturating_sub(in_use));
            if count < 2 {
                return Workers {
                    budget: self,
                    count: 0,
                };
            }
            match self.in_use.compare_exchange_weak(
                in_use,
                in_use + count,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Workers {
                        budget: self,
                        count,
                    };
                }
                Err(now) => in_use = now,
            }
        }
    }
}

impl Drop for Workers<'_> {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.count, Ordering::AcqRel);
    }
}

/// Chunks in flight per worker, between the reader and the merge. With
/// 1 MiB chunks this keeps a few tens of MiB in flight at most.
const QUEUE: usize = 8;

/// A run of whole records, starting on a record boundary.
struct Chunk {
    block: Arc<Vec<u8>>,
    range: Range<usize>,
    /// File offset of the chunk's first byte.
    offset: u64,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.block[self.range.clone()]
    }
}

/// A chunk and what its worker found: the chunk's own state when every
/// record in it is a data record that passed every check.
struct Checked<'s> {
    chunk: Chunk,
    alone: Option<State<'s>>,
}

/// Verify a fixed-width file over `par.workers` threads. Reads `input` to
/// the end whatever happens, sending every byte to the checksum thread.
pub(super) fn verify_fixed<'s, R: Read>(
    spec: &'s FormatSpec,
    layout: &'s FixedLayout,
    mut input: R,
    hash: SyncSender<Block>,
    ctx: &FileContext<'_>,
    state: &mut State<'s>,
    par: Parallelism,
) -> Result<(), Stop> {
    let named = state.read_name(ctx.name);
    let template = state.for_chunk();
    let template = &template;
    let workers = par.workers.max(1);
    let in_flight = QUEUE * workers;
    // One queue for all workers, so a worker that is descheduled (the
    // checksum thread shares the CPUs) holds up nobody else.
    let (chunk_tx, chunk_rx) = sync_channel::<(usize, Chunk)>(in_flight);
    let chunk_rx = Mutex::new(chunk_rx);
    let chunk_rx = &chunk_rx;
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = sync_channel::<(usize, Option<Checked<'s>>)>(in_flight);
        // One acknowledgement per chunk merged: the reader keeps at most
        // `in_flight` chunks between itself and the merge.
        let (merged_tx, merged_rx) = sync_channel::<()>(in_flight);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let done = done_tx.clone();
                scope.spawn(move || check_chunks(spec, layout, template, chunk_rx, done))
            })
            .collect();
        drop(done_tx);
        let merger = scope.spawn(move || merge(spec, layout, state, done_rx, merged_tx));

        // Nothing is parsed when the file name was refused; the bytes are
        // still read for the checksum.
        let mut parsing = named.is_ok();
        let read = read_chunks(layout, &mut input, &hash, par.chunk_bytes, |chunk, n| {
            // The merge stopped (at an error) when it no longer answers:
            // read on for the checksum only.
            parsing = parsing
                && (n < in_flight || merged_rx.recv().is_ok())
                && chunk_tx.send((n, chunk)).is_ok();
        });
        drop(chunk_tx);
        drop(merged_rx);
        // Joined here, not by the scope, so that a thread that failed is an
        // error of this file and not a panic of the caller.
        let merged = merger.join();
        let workers_ok = handles.into_iter().all(|h| h.join().is_ok());
        let merged =
            merged.map_err(|_| Stop::Io(io::Error::other("the verification merge failed")))?;
        let sent = read?;
        named?;
        let merged_chunks = merged?;
        if !workers_ok || merged_chunks != sent {
            return Err(Stop::Io(io::Error::other("a verification worker failed")));
        }
        Ok(())
    })
}

/// Read `input` to the end in blocks of about `chunk_bytes`, send each block
/// to the checksum thread, and hand out the records it completes as chunks
/// (numbered from 0). Returns how many chunks were handed out.
fn read_chunks<R: Read>(
    layout: &FixedLayout,
    input: &mut R,
    hash: &SyncSender<Block>,
    chunk_bytes: usize,
    mut hand_out: impl FnMut(Chunk, usize),
) -> Result<usize, Stop> {
    let len = layout.record_length;
    // A block is a chunk's bytes behind the partial record carried from the
    // last block (always shorter than a record and its terminator).
    let size = chunk_bytes.max(len + 2) + len + 2;
    let mut pool: Vec<Arc<Vec<u8>>> = Vec::new();
    let mut tail: Vec<u8> = Vec::with_capacity(len + 2);
    let mut offset = 0u64;
    let mut sent = 0usize;
    loop {
        let mut block = take_buffer(&mut pool, size);
        let Some(buf) = Arc::get_mut(&mut block) else {
            return Err(Stop::Io(io::Error::other("a read buffer is still shared")));
        };
        buf[..tail.len()].copy_from_slice(&tail);
        let want = buf.len() - tail.len();
        let n = read_full(input, &mut buf[tail.len()..])?;
        let end = tail.len() + n;
        let eof = n < want;
        let cut = if eof {
            end
        } else {
            cut_point(layout, &buf[..end])
        };
        tail.clear();
        tail.extend_from_slice(&buf[cut..end]);
        if n > 0 {
            hash.send((Arc::clone(&block), end - n..end))
                .map_err(|_| Stop::Io(io::Error::other("the checksum thread stopped")))?;
        }
        if cut > 0 {
            hand_out(
                Chunk {
                    block: Arc::clone(&block),
                    range: 0..cut,
                    offset,
                },
                sent,
            );
            sent += 1;
            offset += cut as u64;
        }
        pool.push(block);
        if eof {
            return Ok(sent);
        }
    }
}

/// A buffer nobody else holds any more, or a new one.
fn take_buffer(pool: &mut Vec<Arc<Vec<u8>>>, size: usize) -> Arc<Vec<u8>> {
    match pool.iter().position(|b| Arc::strong_count(b) == 1) {
        Some(i) => pool.swap_remove(i),
        None => Arc::new(vec![0u8; size]),
    }
}

/// Where to end a chunk in `bytes` (which starts on a record boundary): after
/// the last whole record. When no boundary is in sight the whole block goes,
/// and the merge reads the record across blocks in order (it is invalid: a
/// valid record is shorter than a block).
fn cut_point(layout: &FixedLayout, bytes: &[u8]) -> usize {
    let len = layout.record_length;
    let cut = match layout.terminator {
        Terminator::None => bytes.len() - bytes.len() % len,
        Terminator::Line => memchr::memrchr(b'\n', bytes).map_or(0, |nl| nl + 1),
    };
    if cut == 0 || bytes.len() - cut > len + 2 {
        bytes.len()
    } else {
        cut
    }
}

/// A worker: check chunks on their own, taking the next from the shared
/// queue whenever free.
fn check_chunks<'s>(
    spec: &'s FormatSpec,
    layout: &'s FixedLayout,
    template: &State<'s>,
    chunks: &Mutex<Receiver<(usize, Chunk)>>,
    done: SyncSender<(usize, Option<Checked<'s>>)>,
) {
    loop {
        // The lock is only held while waiting for the next chunk; a worker
        // that failed holding it cannot have left the queue inconsistent.
        let next = chunks.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((n, chunk)) = next else { return };
        // A check that panics (a bug) is reported, not left for the merge
        // to wait on for ever.
        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut alone = template.for_chunk();
            let bytes = chunk.bytes();
            let whole = matches!(
                fixed_records(spec, layout, &mut alone, bytes, chunk.offset, false, &mut ()),
                Ok(n) if n == bytes.len()
            );
            whole.then_some(alone)
        }))
        .ok()
        .map(|alone| Checked { chunk, alone });
        let failed = checked.is_none();
        if done.send((n, checked)).is_err() || failed {
            return;
        }
    }
}

/// Merge the workers' results in file order, whatever order they finish
/// in, acknowledging each chunk merged. Returns the number of chunks merged.
fn merge<'s>(
    spec: &'s FormatSpec,
    layout: &'s FixedLayout,
    state: &mut State<'s>,
    done: Receiver<(usize, Option<Checked<'s>>)>,
    merged: SyncSender<()>,
) -> Result<usize, Stop> {
    let bound = per_record_bound(spec, layout);
    // Bytes of a record begun in one chunk and not yet checked, and the
    // file offset of `carry[0]` (or of the next chunk when it is empty).
    let mut carry: Vec<u8> = Vec::new();
    let mut at = 0u64;
    let mut n = 0usize;
    // Chunks finished ahead of their turn (at most the reader's lead).
    let mut early = BTreeMap::new();
    for (i, checked) in done {
        let Some(checked) = checked else {
            return Err(Stop::Io(io::Error::other("a verification worker failed")));
        };
        early.insert(i, checked);
        while let Some(checked) = early.remove(&n) {
            n += 1;
            let chunk = &checked.chunk;
            let bytes = chunk.bytes();
            if carry.is_empty()
                && let Some(alone) = checked.alone
                && state.absorb(alone, bound)
            {
                at = chunk.offset + bytes.len() as u64;
            } else {
                // In order, with the file's real state.
                carry.extend_from_slice(bytes);
                let consumed = fixed_records(spec, layout, state, &carry, at, false, &mut ())?;
                carry.drain(..consumed);
                at += consumed as u64;
            }
            // The reader may have stopped waiting (it has read everything).
            let _ = merged.try_send(());
        }
    }
    if !early.is_empty() {
        return Err(Stop::Io(io::Error::other("a verification worker failed")));
    }
    fixed_records(spec, layout, state, &carry, at, true, &mut ())?;
    fixed_end(state, at + carry.len() as u64)?;
    Ok(n)
}

/// The largest magnitude one data record can add to any control total: a
/// summed field's value has fewer digits than the field is wide (`None` when
/// that is too large to reason about).
fn per_record_bound(spec: &FormatSpec, layout: &FixedLayout) -> Option<Decimal> {
    let mut widest = 1usize;
    for control in &spec.controls {
        for (i, def) in layout.records.iter().enumerate() {
            if let Some(f) = control.on(i).and_then(|on| on.field) {
                widest = widest.max(def.fields.get(f).map_or(0, |f| f.len));
            }
        }
    }
    let power = u32::try_from(widest).ok().filter(|w| *w <= 28)?;
    Decimal::try_from_i128_with_scale(10i128.pow(power), 0).ok()
}

impl<'s> State<'s> {
    /// A fresh state for checking a chunk of data records on its own: the
    /// file name's fields as read, no sequence number expected yet.
    fn for_chunk(&self) -> State<'s> {
        let mut alone = State::new(self.spec);
        alone.name_values = self.name_values.clone();
        alone.name_buf = self.name_buf.clone();
        alone.name_matched = self.name_matched;
        alone.plans = self.plans;
        alone.phase = Phase::Body;
        alone.chunk = true;
        alone.next_seq.iter_mut().for_each(|s| *s = None);
        alone
    }

    /// Take a chunk checked on its own into the file's state, when its
    /// result is what checking it here in order would have given: the file
    /// is between header and trailer, the chunk's first sequence numbers
    /// follow on, and no running total can overflow within it (the in-order
    /// pass reports an overflow at the record where it happens).
    fn absorb(&mut self, alone: State<'s>, bound: Option<Decimal>) -> bool {
        if self.phase != Phase::Body || alone.phase != Phase::Body {
            return false;
        }
        let follows = alone
            .first_seq
            .iter()
            .zip(&self.next_seq)
            .all(|(first, next)| first.is_none() || first == next);
        if !follows {
            return false;
        }
        let Some(most) = bound.and_then(|b| b.checked_mul(Decimal::from(alone.data_records)))
        else {
            return false;
        };
        let mut totals = self.controls.clone();
        for (total, part) in totals.iter_mut().zip(&alone.controls) {
            if total.value().abs().checked_add(most).is_none() {
                return false;
            }
            match total.add_total(*part) {
                Some(t) => *total = t,
                None => return false,
            }
        }
        self.controls = totals;
        for (next, after) in self.next_seq.iter_mut().zip(alone.next_seq) {
            if after.is_some() {
                *next = after;
            }
        }
        self.fingerprint
            .add_sum(alone.fingerprint.sum, alone.fingerprint.count);
        self.record_no += alone.record_no;
        self.data_records += alone.data_records;
        self.drill_signals.extend(alone.drill_signals);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::generate::{CardFile, CardRecord};
    use super::super::super::spec::{Layout, Role};
    use super::super::{FileContext, verify_with};
    use super::*;

    #[test]
    fn a_check_that_panics_ends_the_file_with_an_error_not_a_hang() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("formats");
        let mut spec = FormatSpec::load(&dir.join("card-settlement.toml")).unwrap();
        // A defect no loaded spec can have: a data field reaching past the
        // record, so checking any data record panics.
        let Layout::Fixed(layout) = &mut spec.layout else {
            panic!("card-settlement is fixed-width");
        };
        let data = layout
            .records
            .iter_mut()
            .find(|r| r.role == Role::Data)
            .unwrap();
        data.fields.last_mut().unwrap().len += 100;
        let Layout::Fixed(layout) = &spec.layout else {
            panic!("card-settlement is fixed-width");
        };
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let mut file = CardFile::new(day);
        file.records = (0..20).map(|i| CardRecord::synthetic(i, day)).collect();
        let bytes = file.render();

        // The worker reports the chunk it failed on...
        let template = State::new(&spec).for_chunk();
        let (chunk_tx, chunk_rx) = sync_channel(1);
        let (done_tx, done_rx) = sync_channel(1);
        let chunk = Chunk {
            block: Arc::new(bytes[202..404].to_vec()),
            range: 0..202,
            offset: 202,
        };
        chunk_tx.send((0, chunk)).unwrap();
        drop(chunk_tx);
        check_chunks(&spec, layout, &template, &Mutex::new(chunk_rx), done_tx);
        let (n, checked) = done_rx.recv().unwrap();
        assert!(n == 0 && checked.is_none());
        // ...and the merge stops there.
        let (done_tx, done_rx) = sync_channel(1);
        done_tx.send((0, None)).unwrap();
        drop(done_tx);
        let (merged_tx, _merged_rx) = sync_channel(1);
        let mut state = State::new(&spec);
        let stopped = merge(&spec, layout, &mut state, done_rx, merged_tx);
        assert!(matches!(stopped, Err(Stop::Io(_))));

        // The whole check: an error (from the worker or the merge, whichever
        // fails first), never a panic in the caller or a merge waiting for ever.
        let ctx = FileContext {
            name: &file.file_name(),
            sidecar: None,
        };
        let par = Parallelism {
            workers: 2,
            chunk_bytes: 202,
        };
        let e = verify_with(&spec, &bytes[..], ctx, &mut (), par).unwrap_err();
        assert!(e.to_string().contains("verification"), "{e}");
    }

    #[test]
    fn files_share_the_workers() {
        let budget = WorkerBudget {
            in_use: AtomicUsize::new(0),
            cap: 4,
        };
        let a = budget.take(3);
        assert_eq!(a.count, 3);
        // One left: not worth a chunked check.
        assert_eq!(budget.take(4).count, 0);
        drop(a);
        let b = budget.take(2);
        let c = budget.take(8);
        assert_eq!((b.count, c.count), (2, 2));
        drop((b, c));
        assert_eq!(budget.in_use.load(Ordering::Relaxed), 0);
    }
}
