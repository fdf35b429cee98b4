//! How many idempotency records out of memory have each key hash: a fixed-size table of
//! 8-byte slots, made at its full size on first use.

use hashbrown::HashTable;

/// Bits of a slot that hold the count; the rest hold the hash's top bits (its tag).
const COUNT_BITS: u32 = 16;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Records a table is made for at most: 2^23 slots, 72 MiB.
const RECORDS_MADE_FOR_MAX: usize = 1 << 22;

/// Counts of records out of memory under the top 48 bits of their key's hash, each slot
/// one `u64` (tag and count). A slot of a `HashMap<u64, u32>` took 16 bytes and its
/// table doubled as records came (about 10 MB at once past 459k records); this one is
/// made for the records' cap when the first record leaves memory, so a shop's memory
/// does not grow with its keyed requests (about 19 MB for the default cap of 1,000,000
/// records; past the cap it would grow, but the sweep keeps the records under it).
///
/// Two keys share a tag with a chance of 2^-48 a pair (a count of two then, settled by
/// the read, as for a full hash): at a million records, a fresh key is taken for one
/// out of memory, and read, once in about 280 million lookups.
#[derive(Default)]
pub(super) struct StoredCounts {
    table: HashTable<u64>,
    /// Records the table is made for at first use.
    capacity: usize,
}

impl std::fmt::Debug for StoredCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCounts").field("tags", &self.table.len()).finish()
    }
}

impl StoredCounts {
    /// Counts to be made for `records` records when the first one comes: at most
    /// [`RECORDS_MADE_FOR_MAX`], past which the table grows as records come (a cap
    /// of `usize::MAX` is a cap nobody can allocate for).
    pub(super) fn new(records: usize) -> StoredCounts {
        StoredCounts { table: HashTable::new(), capacity: records.min(RECORDS_MADE_FOR_MAX) }
    }

    fn tag(hash: u64) -> u64 {
        hash >> COUNT_BITS
    }

    /// The table's own hash of a tag: a bijection that spreads the tag's bits over the
    /// whole word (the table indexes by the low bits and filters by the top seven).
    fn table_hash(tag: u64) -> u64 {
        tag.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
    }

    fn slot_tag(slot: u64) -> u64 {
        slot >> COUNT_BITS
    }

    /// Whether a record out of memory may have `hash`.
    pub(super) fn contains(&self, hash: u64) -> bool {
        let tag = StoredCounts::tag(hash);
        self.table
            .find(StoredCounts::table_hash(tag), |&s| StoredCounts::slot_tag(s) == tag)
            .is_some()
    }

    /// Counts one more record of `hash`. A count at its most (65,535 records under one
    /// tag) stays there: a tag that may have records is always read, never missed.
    pub(super) fn add(&mut self, hash: u64) {
        if self.table.capacity() == 0 {
            self.table
                .reserve(self.capacity, |&s| StoredCounts::table_hash(StoredCounts::slot_tag(s)));
        }
        let tag = StoredCounts::tag(hash);
        let entry = self.table.entry(
            StoredCounts::table_hash(tag),
            |&s| StoredCounts::slot_tag(s) == tag,
            |&s| StoredCounts::table_hash(StoredCounts::slot_tag(s)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                if *slot & COUNT_MASK != COUNT_MASK {
                    *slot += 1;
                }
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(tag << COUNT_BITS | 1);
            }
        }
    }

    /// Counts one record of `hash` less; says whether one was counted.
    pub(super) fn remove(&mut self, hash: u64) -> bool {
        let tag = StoredCounts::tag(hash);
        let Ok(mut slot) = self
            .table
            .find_entry(StoredCounts::table_hash(tag), |&s| StoredCounts::slot_tag(s) == tag)
        else {
            return false;
        };
        let count = *slot.get() & COUNT_MASK;
        if count == 1 {
            slot.remove();
        } else if count != COUNT_MASK {
            *slot.get_mut() -= 1;
        }
        true
    }

    /// Bytes the table holds (for tests).
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.table.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_tag_and_the_table_is_made_once() {
        let mut counts = StoredCounts::new(1000);
        assert!(!counts.contains(7 << COUNT_BITS));
        assert_eq!(counts.bytes(), 0, "nothing is made before the first count");
        for n in 0..1000u64 {
            counts.add(n.wrapping_mul(0xdead_beef_1234_5677));
        }
        let made = counts.bytes();
        assert!(made >= 1000 * 8);
        // Two hashes that differ only in the bits below the tag share a count.
        let (a, b) = (0xabcd_ef01_2345_0000, 0xabcd_ef01_2345_ffff);
        counts.add(a);
        counts.add(b);
        assert!(counts.contains(a) && counts.contains(b));
        assert!(counts.remove(a));
        assert!(counts.contains(b), "one record of the tag is still counted");
        assert!(counts.remove(b));
        assert!(!counts.contains(a) && !counts.remove(a));
        for n in 0..1000u64 {
            let hash = n.wrapping_mul(0xdead_beef_1234_5677);
            assert!(counts.contains(hash));
            assert!(counts.remove(hash));
            assert!(!counts.contains(hash), "{n}");
        }
        assert_eq!(counts.bytes(), made, "the table neither grew nor shrank");
    }

    #[test]
    fn a_cap_past_any_memory_makes_a_bounded_table() {
        let mut counts = StoredCounts::new(usize::MAX);
        counts.add(1 << COUNT_BITS);
        assert!(counts.contains(1 << COUNT_BITS));
        assert!(counts.bytes() <= RECORDS_MADE_FOR_MAX * 2 * 9 + 64);
    }

    #[test]
    fn a_full_count_stays_full() {
        let mut counts = StoredCounts::new(4);
        let hash = 0x0123_4567_89ab_0000;
        for _ in 0..COUNT_MASK + 10 {
            counts.add(hash);
        }
        for _ in 0..COUNT_MASK + 10 {
            assert!(counts.remove(hash));
        }
        assert!(counts.contains(hash), "a saturated tag is read, never missed");
    }
}
