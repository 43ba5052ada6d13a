//! `/outbox`: where a partner that collects finds its deliveries. Each name
//! is a delivery waiting (or already collected) for this partner; its bytes
//! are read from the content store. A delivery counts as collected only
//! when every byte was read before the handle was closed: a partial `get`
//! (a cut link, a client that stopped) leaves it waiting.

use crate::ledger::DeliveryRow;

/// The byte ranges of one file read so far. Clients keep several reads in
/// flight and may read out of order or twice; ranges are merged as they come.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Sorted, disjoint, non-adjacent half-open ranges.
    ranges: Vec<(u64, u64)>,
}

impl Coverage {
    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Ranges that overlap or touch [start, end) are merged into it.
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        let (mut s, mut e) = (start, end);
        if first < last {
            s = s.min(self.ranges[first].0);
            e = e.max(self.ranges[last - 1].1);
        }
        self.ranges.splice(first..last, [(s, e)]);
    }

    /// Every byte of a file of `size` bytes was read.
    pub fn covers(&self, size: u64) -> bool {
        size == 0
            || self
                .ranges
                .first()
                .is_some_and(|&(s, e)| s == 0 && e >= size)
    }
}

/// A delivery open for reading in one session.
pub struct Collecting {
    pub delivery: DeliveryRow,
    pub file: crate::stage::Blob,
    pub read: Coverage,
}

impl Collecting {
    /// Read up to `len` bytes at `offset`, noting what was read.
    pub fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.file.read_at(&mut buf, offset)?;
        buf.truncate(n);
        self.read.add(offset, offset.saturating_add(n as u64));
        Ok(buf)
    }

    pub fn size(&self) -> u64 {
        u64::try_from(self.delivery.size).unwrap_or(0)
    }

    pub fn complete(&self) -> bool {
        self.read.covers(self.size())
    }
}

#[cfg(test)]
mod tests {
    use super::Coverage;

    #[test]
    fn coverage_merges_reads_in_any_order() {
        let mut c = Coverage::default();
        assert!(!c.covers(10));
        c.add(4, 8);
        c.add(0, 2);
        assert!(!c.covers(10), "a gap at 2..4 and 8..10");
        c.add(8, 10);
        assert!(!c.covers(10));
        c.add(1, 5);
        assert_eq!(c.ranges, vec![(0, 10)]);
        assert!(c.covers(10));
        c.add(3, 3);
        c.add(20, 30);
        assert_eq!(c.ranges, vec![(0, 10), (20, 30)]);
        assert!(c.covers(10));
        assert!(!c.covers(11));
    }

    #[test]
    fn an_empty_file_is_read_whole_at_once() {
        assert!(Coverage::default().covers(0));
    }

    #[test]
    fn touching_ranges_merge() {
        let mut c = Coverage::default();
        for i in (0..100u64).rev() {
            c.add(i * 32, (i + 1) * 32);
        }
        assert_eq!(c.ranges, vec![(0, 3200)]);
    }
}
