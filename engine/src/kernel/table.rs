//! What the kernel knows of a domain: its tables (a column family each, how a row is
//! keyed and loaded), its named counters, its timers and its recovery check. A domain
//! describes itself in one [`Domain`] value; `domains.rs` lists them.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::domains::{Event, State};
use crate::error::Result;
use crate::kernel::handler::{Ctx, Limits};
use crate::types::TimestampMs;

/// A value stored as a row: its table, its key there, its bytes. A domain's hook that
/// is handed rows (see [`Domain::written`]) finds its own type's among them as `Any`.
pub(crate) trait Persist: std::any::Any + Send + Sync + fmt::Debug {
    /// The column family.
    fn table(&self) -> &'static str;
    /// The key in it.
    fn key(&self) -> Vec<u8>;
    /// Appends the stored value (enveloped rkyv bytes) to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
    /// The stored value in a buffer of its own.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Implements [`Persist`] for an entity type: `persist!(Product, "products", |p| key)`.
macro_rules! persist {
    ($ty:ty, $table:expr, |$value:ident| $key:expr) => {
        impl $crate::kernel::table::Persist for $ty {
            fn table(&self) -> &'static str {
                $table
            }
            fn key(&self) -> Vec<u8> {
                let $value = self;
                $key
            }
            fn encode_into(&self, out: &mut Vec<u8>) {
                $crate::kernel::codec::encode_into(self, out)
            }
        }
    };
}
pub(crate) use persist;

/// A changed row, as it must be persisted: the value right after the change, or its
/// deletion. `apply` reports these; the materializer writes the last of each key.
#[derive(Clone, Debug)]
pub(crate) enum Row {
    Put(Arc<dyn Persist>),
    Delete { table: &'static str, key: Vec<u8> },
}

impl Row {
    pub(crate) fn put(value: Arc<impl Persist + 'static>) -> Row {
        Row::Put(value)
    }

    pub(crate) fn delete(table: &'static str, key: impl Into<Vec<u8>>) -> Row {
        Row::Delete { table, key: key.into() }
    }

    /// Where it is stored: its column family and key.
    pub(crate) fn location(&self) -> (&'static str, Vec<u8>) {
        match self {
            Row::Put(value) => (value.table(), value.key()),
            Row::Delete { table, key } => (table, key.clone()),
        }
    }
}

/// Visits the rows of a table, one at a time.
pub(crate) type RowVisitor<'a> = &'a mut dyn FnMut(&dyn Persist);

/// One table of a domain: a column family of rows of one type.
pub(crate) struct Table {
    /// The column family.
    pub(crate) name: &'static str,
    /// Puts a stored row (enveloped bytes) into the state at open.
    pub(crate) load: fn(&State, &[u8]) -> Result<()>,
    /// Visits every row the state holds in this table (for digests that compare two
    /// states: a primary and its standby).
    pub(crate) rows: fn(&State, RowVisitor<'_>),
    /// Checks a format-1 row (bare rkyv bytes) decodes as the table's type.
    pub(crate) check_v1: fn(&[u8]) -> Result<()>,
    /// Whether an open may load this table's rows on several threads at once: true
    /// only when a row's `load` writes nothing but its own entries in concurrent maps
    /// and reads nothing another row of the table writes. For the tables that grow
    /// with orders; the others load on one thread, in key order.
    pub(crate) load_in_parallel: bool,
    /// Whether the store keeps the column family in a skip-list memtable rather than a
    /// vector one, which appends any key but is sorted whole at every flush and copied
    /// and sorted for every point read. For tables whose new rows' keys ascend
    /// (sequence numbers) and outnumber rewrites of old ones, where an ascending key is
    /// linked next to the last one; and for tables read by key while the engine runs
    /// (rows out of memory), so that a read does not sort the memtable.
    pub(crate) skip_list: bool,
    /// Makes room, before an open loads the table, for about this many rows (the
    /// store's estimate, at most [`RESERVE_ROWS_MAX`]) in the maps its rows go to: a
    /// map that grows while it loads copies its entries at every doubling, and a walk
    /// of a map left mid-copy finishes the copy first (papaya's `help_copy` was a
    /// seventh of an open's samples, 100k products and 1M orders). For tables that may
    /// hold many rows.
    pub(crate) reserve: Option<fn(&State, usize)>,
}

/// The most rows a table's maps are sized for before it loads: the store's estimate
/// also counts rows that stay out of memory (settled orders, when the store keeps
/// them) and deletions not yet compacted, and room reserved for them would be held
/// for good (papaya: 9 bytes a slot, 1.3 to 2.7 slots a row; 19 MB for 2^20 rows). Past
/// it a map grows as it loads.
pub(crate) const RESERVE_ROWS_MAX: usize = 1 << 20;

/// A named, persisted counter (sequential ids and storage keys). Its name is its key in
/// `meta`: never rename one.
#[derive(Debug)]
pub(crate) struct Counter {
    pub(crate) name: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub(crate) const fn new(name: &'static str) -> Counter {
        Counter { name, value: AtomicU64::new(0) }
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// The next value (what `bump` will make it), for `decide`.
    pub(crate) fn next(&self) -> u64 {
        self.get() + 1
    }

    /// Advances it by one and returns the new value; `apply` only.
    pub(crate) fn bump(&self) -> u64 {
        self.value.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn set(&self, value: u64) {
        self.value.store(value, Ordering::Release);
    }
}

/// Work a domain does on the sequencer's clock (`ExpireDue`): reservations that ran
/// out, records past their time to live.
pub(crate) struct Timers {
    /// Whether anything is due at `now`.
    pub(crate) due: fn(&State, TimestampMs, &Limits) -> bool,
    /// Adds the events of what is due (at most
    /// [`crate::EXPIRIES_PER_COMMAND_MAX`] per kind); returns the reservations it
    /// releases.
    pub(crate) expire: fn(&State, &Ctx<'_>, &mut Vec<Event>) -> usize,
}

/// A domain, as the kernel sees it.
pub(crate) struct Domain {
    /// Its name (logs, errors).
    pub(crate) name: &'static str,
    /// Its tables, loaded in this order (after every earlier domain's).
    pub(crate) tables: &'static [Table],
    /// Its counters, each given to the visitor: no list is made for them (the counters
    /// are read at every commit group's hand-over).
    pub(crate) counters: for<'a> fn(&'a State, &mut dyn FnMut(&'a Counter)),
    /// Its timers, if it has any.
    pub(crate) timers: Option<Timers>,
    /// A check of the recovered state (after the log tail is replayed).
    pub(crate) verify: Option<fn(&State) -> Result<()>>,
    /// Told of the rows the materializer has just written (store reads return them
    /// from now on): a domain that keeps part of a table out of memory lets those
    /// rows' values go.
    pub(crate) written: Option<fn(&State, &[Row])>,
}

/// A point-lookup index: a concurrent hash map whose reads never block and never wait
/// for the writer (`papaya`: lock-free reads, incremental resizing, so no lookup pays
/// for a whole-table resize). Values are cheap clones (`Arc`s and ids). Chosen over the
/// ordered skip list it replaces, and over `scc` and a locked `HashMap`, by
/// `benches/maps.rs` (figures in BENCHMARKS.md).
///
/// Keys a client chooses (SKUs, handles, emails, idempotency keys) are hashed with the
/// standard library's keyed SipHash, so nobody can aim many keys at one bucket; keys the
/// engine makes ([`IdIndex`]) with FxHash, a multiply and a rotate per word.
pub(crate) struct Index<K, V, S = std::hash::RandomState> {
    map: papaya::HashMap<K, V, S>,
}

/// An index keyed by strings only the shop's staff create (SKUs): a client can look
/// any key up but never add one, so it cannot crowd a bucket, and a fast hash seeded
/// at random per map (foldhash: a few multiplies per 16 bytes, against SipHash's
/// rounds per 8) is enough. Keys that clients create keep [`Index`]'s SipHash.
pub(crate) type StaffKeyIndex<K, V> = Index<K, V, foldhash::fast::RandomState>;

/// An index keyed by ids the engine assigns: sequence numbers and 128 random bits, which
/// no client can choose, so a fast unkeyed hash is safe.
pub(crate) type IdIndex<K, V> = Index<K, V, rustc_hash::FxBuildHasher>;

/// Replaced entries a thread sets aside before it hands them to reclamation. Each
/// hand-over costs a `membarrier` system call that interrupts every core running the
/// process; at the default of 32 the sequencer, which replaces a cart and a stock
/// cell per checkout, made one every ~16 checkouts (2% of all CPU in the durable
/// bench). A larger batch holds a few hundred more superseded values per map.
const RETIRE_BATCH: usize = 512;

impl<K, V, S: Default> Default for Index<K, V, S> {
    fn default() -> Self {
        let map = papaya::HashMap::builder()
            .hasher(S::default())
            .collector(seize::Collector::new().batch_size(RETIRE_BATCH))
            .build();
        Index { map }
    }
}

impl<K: fmt::Debug + Hash + Eq, V: fmt::Debug, S: BuildHasher> fmt::Debug for Index<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("len", &self.map.len()).finish()
    }
}

impl<K: Hash + Eq + Send + Sync, V: Clone + Send + Sync, S: BuildHasher> Index<K, V, S> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().get(key).cloned()
    }

    /// Calls `read` with the value under `key` without cloning it: an `Arc` value's
    /// count is a word that every reader would otherwise write.
    pub(crate) fn with<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().get(key).map(read)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().contains_key(key)
    }

    /// Inserts `value` under `key`.
    pub(crate) fn insert(&self, key: K, value: V) {
        self.map.pin().insert(key, value);
    }

    /// Inserts `value` under `key` and returns the value it replaced (a clone, which
    /// [`Index::insert`] does not pay for).
    pub(crate) fn replace(&self, key: K, value: V) -> Option<V> {
        self.map.pin().insert(key, value).cloned()
    }

    pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.pin().remove(key).cloned()
    }

    /// Removes `key`'s value if `should_remove` holds for it at the instant of the
    /// removal (a value replaced meanwhile is judged, not the one seen before); says
    /// whether it removed one.
    pub(crate) fn remove_if<Q>(&self, key: &Q, should_remove: impl FnMut(&K, &V) -> bool) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        matches!(self.map.pin().remove_if(key, should_remove), Ok(Some(_)))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Removes every entry.
    pub(crate) fn clear(&self) {
        self.map.pin().clear();
    }

    /// Makes room for `additional` more entries at once, so that inserting them copies
    /// no table.
    pub(crate) fn reserve(&self, additional: usize) {
        self.map.pin().reserve(additional);
    }

    /// Visits the entries of one of `shares` disjoint shares of the map (by key hash;
    /// every entry is in exactly one share), so that several threads can each take
    /// one. Values outside the share are not touched.
    pub(crate) fn for_each_in_share(
        &self,
        share: usize,
        shares: usize,
        mut visit: impl FnMut(&K, &V),
    ) {
        let shares = shares.max(1) as u64;
        for (k, v) in self.map.pin().iter() {
            if rustc_hash::FxBuildHasher.hash_one(k) % shares == share as u64 {
                visit(k, v);
            }
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> Vec<(K, V)>
    where
        K: Clone,
    {
        self.map.pin().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// An index over the dense sequence numbers the engine gives an entity kind: a slot per
/// number, so an insert writes one slot where a skip list searches and links a node
/// (the orders' sequence index was a third of a checkout's skip-list work), and a walk
/// in sequence reads consecutive slots. Reads never block; slots are set once, by the
/// sequencer or, while a table loads, by several loading threads in any order.
///
/// A three-level radix tree of fixed-size arrays, each made when the first number in
/// it is set: no array is ever copied or grown, so no insert pays for more than one
/// leaf of [`SEQ_LEAF_SLOTS`] (a doubling vector would stall the sequencer for the
/// copy of every order so far). Numbers up to 2^34 are held; sequences are counters,
/// far below that. A slot is the value's 16 bytes and a bit saying it is set (a
/// `OnceLock` of a 16-byte id took 32, for every order the shop ever had).
pub(crate) struct SeqIndex<V> {
    top: Box<[SeqArray<OnceLock<SeqLeaf>>]>,
    /// One past the highest number set.
    end: AtomicU64,
    _values: std::marker::PhantomData<fn() -> V>,
}

/// One array of a [`SeqIndex`] level, made on first use.
type SeqArray<T> = OnceLock<Box<[T]>>;

/// A value a [`SeqIndex`] holds: 128 bits or fewer, copied in and out.
pub(crate) trait SeqValue: Copy {
    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
}

impl SeqValue for crate::ids::OrderId {
    fn to_bits(self) -> u128 {
        self.bits()
    }

    fn from_bits(bits: u128) -> Self {
        crate::ids::OrderId::from_random(bits)
    }
}

/// The slots of one leaf of a [`SeqIndex`]. A value is written (its two halves) before
/// its bit is set with `Release`, and read only after its bit is seen with `Acquire`:
/// each slot is written once, by one thread, so a reader never sees half a value.
struct SeqLeaf {
    set: Box<[AtomicU64]>,
    halves: Box<[[AtomicU64; 2]]>,
}

impl SeqLeaf {
    fn new() -> SeqLeaf {
        SeqLeaf {
            set: (0..SEQ_LEAF_SLOTS / 64).map(|_| AtomicU64::new(0)).collect(),
            halves: (0..SEQ_LEAF_SLOTS).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect(),
        }
    }

    fn get(&self, slot: usize) -> Option<u128> {
        if self.set[slot / 64].load(Ordering::Acquire) & (1 << (slot % 64)) == 0 {
            return None;
        }
        let [low, high] = &self.halves[slot];
        Some(
            u128::from(low.load(Ordering::Relaxed))
                | u128::from(high.load(Ordering::Relaxed)) << 64,
        )
    }

    /// Sets `slot` unless it is set; whether it was not.
    fn set(&self, slot: usize, bits: u128) -> bool {
        let (word, bit) = (&self.set[slot / 64], 1 << (slot % 64));
        if word.load(Ordering::Acquire) & bit != 0 {
            return false;
        }
        let [low, high] = &self.halves[slot];
        low.store(bits as u64, Ordering::Relaxed);
        high.store((bits >> 64) as u64, Ordering::Relaxed);
        word.fetch_or(bit, Ordering::Release) & bit == 0
    }
}

const SEQ_LEAF_BITS: u32 = 12;
const SEQ_MID_BITS: u32 = 11;
const SEQ_TOP_BITS: u32 = 11;
/// Slots in one leaf array of a [`SeqIndex`].
const SEQ_LEAF_SLOTS: usize = 1 << SEQ_LEAF_BITS;
/// One past the highest number a [`SeqIndex`] holds.
const SEQ_END: u64 = 1 << (SEQ_LEAF_BITS + SEQ_MID_BITS + SEQ_TOP_BITS);

fn lazy_array<T>(len: usize) -> Box<[OnceLock<T>]> {
    (0..len).map(|_| OnceLock::new()).collect()
}

impl<V> Default for SeqIndex<V> {
    fn default() -> Self {
        SeqIndex {
            top: lazy_array(1 << SEQ_TOP_BITS),
            end: AtomicU64::new(0),
            _values: std::marker::PhantomData,
        }
    }
}

impl<V> fmt::Debug for SeqIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeqIndex").field("end", &self.end.load(Ordering::Relaxed)).finish()
    }
}

/// The place of `seq` in each level of a [`SeqIndex`].
fn seq_place(seq: u64) -> (usize, usize, usize) {
    let mask = |bits: u32| (1u64 << bits) - 1;
    let leaf = (seq & mask(SEQ_LEAF_BITS)) as usize;
    let mid = ((seq >> SEQ_LEAF_BITS) & mask(SEQ_MID_BITS)) as usize;
    let top = (seq >> (SEQ_LEAF_BITS + SEQ_MID_BITS)) as usize;
    (top, mid, leaf)
}

impl<V: SeqValue> SeqIndex<V> {
    /// Sets the slot of `seq`; a slot already set keeps its value (numbers are not
    /// reused, and no two threads set the same one).
    ///
    /// # Panics
    /// At `seq` ≥ [`SEQ_END`].
    pub(crate) fn insert(&self, seq: u64, value: V) {
        assert!(seq < SEQ_END, "sequence number {seq} is past the sequence index");
        let (top, mid, leaf) = seq_place(seq);
        let mids = self.top[top].get_or_init(|| lazy_array(1 << SEQ_MID_BITS));
        let slots = mids[mid].get_or_init(SeqLeaf::new);
        let fresh = slots.set(leaf, value.to_bits());
        debug_assert!(fresh, "sequence number {seq} set twice");
        self.end.fetch_max(seq + 1, Ordering::Release);
    }

    /// The value of `seq`, if it was set.
    pub(crate) fn get(&self, seq: u64) -> Option<V> {
        if seq >= SEQ_END {
            return None;
        }
        let (top, mid, leaf) = seq_place(seq);
        self.top[top].get()?[mid].get()?.get(leaf).map(V::from_bits)
    }

    /// The numbers set from `first` on, with their values, in order. Arrays never made
    /// are stepped over whole.
    pub(crate) fn from(&self, first: u64) -> impl Iterator<Item = (u64, V)> + '_ {
        let end = self.end.load(Ordering::Acquire);
        let past = |seq: u64, bits: u32| (seq | ((1 << bits) - 1)) + 1;
        let mut seq = first;
        std::iter::from_fn(move || {
            while seq < end {
                let (top, mid, leaf) = seq_place(seq);
                let Some(mids) = self.top[top].get() else {
                    seq = past(seq, SEQ_LEAF_BITS + SEQ_MID_BITS);
                    continue;
                };
                let Some(slots) = mids[mid].get() else {
                    seq = past(seq, SEQ_LEAF_BITS);
                    continue;
                };
                let at = seq;
                seq += 1;
                if let Some(bits) = slots.get(leaf) {
                    return Some((at, V::from_bits(bits)));
                }
            }
            None
        })
    }
}

/// The sequence numbers of each group's members, in ascending order: a customer's
/// orders. A skip list keyed by `(group, sequence)` searched a path through every
/// member of every group on each insert (nearly all of an order's index upkeep on the
/// sequencer); here an insert is one hash lookup and, nearly always, one number
/// written in place.
///
/// A group is a [`Members`]: chunks of at most [`GROUP_CHUNK`] numbers, the last with
/// room to grow. A number past the last member, from the index's one writer
/// ([`GroupIndex::append`]: the sequencer), is written into that room and then
/// counted, so readers never wait and never see a number before it is set; only when
/// the room is full is the group replaced by a new [`Members`] (copy on write) whose
/// last chunk has twice the room, or is a new chunk once the last holds
/// [`GROUP_CHUNK`]. The full chunks are shared by successive snapshots. Replacing the
/// group on every order (a copy of the last chunk, a new snapshot, and the old one's
/// reclamation, often on another thread) was an eighth of the sequencer's time in a
/// flash sale whose buyers hold thousands of orders each. A number between members
/// copies its chunk and the list of chunks. Members are never removed.
pub(crate) struct GroupIndex<G> {
    groups: IdIndex<G, Arc<Members>>,
}

/// Numbers in one chunk of a [`GroupIndex`] group, at most.
const GROUP_CHUNK: usize = 64;

/// One group of a [`GroupIndex`]: ascending numbers in non-empty chunks, the last
/// one apart from the others, in slots with room for more. A slot is set before
/// `len` counts it, and never changes once counted.
#[derive(Debug)]
pub(crate) struct Members {
    /// Every chunk but the last, in order.
    head: Arc<[Arc<[u64]>]>,
    /// The last chunk: its first `len` slots are its numbers.
    last: Box<[AtomicU64]>,
    /// How many numbers `last` holds (at least one).
    len: AtomicUsize,
}

impl Members {
    fn one(seq: u64) -> Members {
        Members::ending(Arc::from([]), &[seq])
    }

    /// The chunks `head`, then `last` with room to grow: twice its numbers while the
    /// group has one chunk (most groups stay small), a whole chunk's after.
    fn ending(head: Arc<[Arc<[u64]>]>, last: &[u64]) -> Members {
        let room = if head.is_empty() {
            last.len().next_power_of_two().clamp(2, GROUP_CHUNK).max(last.len())
        } else {
            GROUP_CHUNK.max(last.len())
        };
        let slots = (0..room).map(|i| AtomicU64::new(last.get(i).copied().unwrap_or(0))).collect();
        Members { head, last: slots, len: AtomicUsize::new(last.len()) }
    }

    /// Numbers in the last chunk now: a reader's snapshot of the group is the head and
    /// that many.
    fn last_len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// How many numbers chunk `i` holds in the snapshot whose last chunk holds
    /// `last_len` (`None` past the last chunk).
    fn chunk_len(&self, i: usize, last_len: usize) -> Option<usize> {
        match i.cmp(&self.head.len()) {
            std::cmp::Ordering::Less => Some(self.head[i].len()),
            std::cmp::Ordering::Equal => Some(last_len),
            std::cmp::Ordering::Greater => None,
        }
    }

    /// Number `at` of chunk `i`.
    fn number(&self, i: usize, at: usize) -> u64 {
        match self.head.get(i) {
            Some(chunk) => chunk[at],
            None => self.last[at].load(Ordering::Relaxed),
        }
    }

    /// The first chunk holding a number `>= first` (one past the last when none
    /// does), and the position of the first such number in it.
    fn position(&self, first: u64, last_len: usize) -> (usize, usize) {
        let i = self.head.partition_point(|c| c[c.len() - 1] < first);
        if let Some(chunk) = self.head.get(i) {
            return (i, chunk.partition_point(|&n| n < first));
        }
        let at = self.last[..last_len].partition_point(|n| n.load(Ordering::Relaxed) < first);
        if at == last_len {
            (i + 1, 0)
        } else {
            (i, at)
        }
    }

    /// The last chunk's numbers, copied.
    fn last_numbers(&self, last_len: usize) -> Vec<u64> {
        self.last[..last_len].iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// Writes `seq` into the last chunk's room when it is past the last member and
    /// there is room; says whether it did. Only from the index's one writer.
    fn push(&self, seq: u64) -> bool {
        let len = self.len.load(Ordering::Relaxed);
        if len == self.last.len() || seq <= self.last[len - 1].load(Ordering::Relaxed) {
            return false;
        }
        self.last[len].store(seq, Ordering::Relaxed);
        self.len.store(len + 1, Ordering::Release);
        true
    }

    /// These members and `seq`, or `None` when `seq` is one of them. A number past
    /// the last goes into a copy of the last chunk with more room, or a new chunk
    /// when that one holds [`GROUP_CHUNK`] (the list of the others copied once per
    /// [`GROUP_CHUNK`] numbers); one between goes into its chunk, which splits in two
    /// past [`GROUP_CHUNK`].
    fn with(&self, seq: u64) -> Option<Members> {
        let last = self.last_numbers(self.last_len());
        if seq > last[last.len() - 1] {
            if last.len() < GROUP_CHUNK {
                let mut numbers = last;
                numbers.push(seq);
                return Some(Members::ending(self.head.clone(), &numbers));
            }
            let head = self.head.iter().cloned().chain([Arc::from(last)]).collect();
            return Some(Members::ending(head, &[seq]));
        }
        // Between members (a parallel load's order): `seq` is at most the last member,
        // so its chunk is one of these.
        let mut chunks: Vec<Arc<[u64]>> =
            self.head.iter().cloned().chain([Arc::from(last)]).collect();
        let i = chunks.partition_point(|c| c[c.len() - 1] < seq);
        let at = chunks[i].binary_search(&seq).err()?;
        let mut numbers = Vec::with_capacity(chunks[i].len() + 1);
        numbers.extend_from_slice(&chunks[i][..at]);
        numbers.push(seq);
        numbers.extend_from_slice(&chunks[i][at..]);
        if numbers.len() > GROUP_CHUNK {
            let right = numbers.split_off(numbers.len() / 2);
            chunks.insert(i + 1, right.into());
        }
        chunks[i] = numbers.into();
        let last = chunks.pop().expect("a group has a chunk");
        Some(Members::ending(chunks.into(), &last))
    }
}

impl<G> Default for GroupIndex<G> {
    fn default() -> Self {
        GroupIndex { groups: Index::default() }
    }
}

impl<G: Hash + Eq> fmt::Debug for GroupIndex<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupIndex").field("groups", &self.groups.map.len()).finish()
    }
}

impl<G: Hash + Eq + Send + Sync> GroupIndex<G> {
    /// Adds `seq` to `group` (once: a number already there is not added again), by a
    /// new snapshot of the group. Safe from several threads at once, as a table's
    /// parallel load needs: a change made against a snapshot another thread replaced
    /// meanwhile is made again. Never beside [`GroupIndex::append`].
    pub(crate) fn insert(&self, group: G, seq: u64) {
        self.groups.map.pin().compute(group, |entry| match entry {
            None => papaya::Operation::Insert(Arc::new(Members::one(seq))),
            Some((_, members)) => match members.with(seq) {
                Some(members) => papaya::Operation::Insert(Arc::new(members)),
                None => papaya::Operation::Abort(()),
            },
        });
    }

    /// Adds `seq` to `group` as [`GroupIndex::insert`] does, in place when it is past
    /// the group's last member and its last chunk has room. Only for the index's one
    /// writer (the sequencer): an `append` or `insert` beside it on the same group
    /// could lose a number.
    pub(crate) fn append(&self, group: G, seq: u64) {
        let map = self.groups.map.pin();
        if map.get(&group).is_some_and(|members| members.push(seq)) {
            return;
        }
        drop(map);
        self.insert(group, seq);
    }

    /// The numbers of `group` from `first` on, in ascending order, as they were when
    /// the walk began.
    pub(crate) fn from(&self, group: &G, first: u64) -> impl Iterator<Item = u64> {
        // A group never seen has no snapshot to hold: nothing is allocated for it.
        let members = self.groups.get(group);
        let last_len = members.as_ref().map_or(0, |m| m.last_len());
        let (mut chunk, mut at) = members.as_ref().map_or((0, 0), |m| m.position(first, last_len));
        std::iter::from_fn(move || {
            let members = members.as_ref()?;
            let len = members.chunk_len(chunk, last_len)?;
            let seq = members.number(chunk, at);
            at += 1;
            if at == len {
                (chunk, at) = (chunk + 1, 0);
            }
            Some(seq)
        })
    }
}

/// Decodes a stored row of a table's type.
pub(crate) fn decode_row<T>(bytes: &[u8], what: &str) -> Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    crate::kernel::codec::decode(bytes, what)
}

/// Checks a format-1 row decodes as `T` (format 1 wrote today's entity types).
pub(crate) fn check_v1<T>(bytes: &[u8]) -> Result<()>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    crate::kernel::codec::decode_bare::<T>(bytes, "format-1 row").map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine's ordered indexes (pending orders by expiry, the outbox's due
    /// messages, records by age) are walked by `range` and emptied as they go. A node a
    /// walk stepped past must be freed once it is removed: crossbeam-skiplist 0.1.3 kept a
    /// reference to each for ever (crossbeam-rs/crossbeam#1178), so memory grew with
    /// every order. The workspace patches it (`vendor/crossbeam-skiplist`).
    #[test]
    fn a_skip_list_frees_the_nodes_a_range_walked_past_once_they_are_removed() {
        use std::sync::atomic::AtomicUsize;

        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let map = crossbeam_skiplist::SkipMap::new();
        for n in 0..100u64 {
            map.insert(n, Counted(dropped.clone()));
        }
        assert_eq!(map.range(10..90).count(), 80);
        assert_eq!(map.range(..).rev().count(), 100);
        for n in 0..100u64 {
            assert!(map.remove(&n).is_some());
        }
        // A removed node is freed once no thread can still be reading it: when the
        // epoch has moved on, which other tests' threads may delay for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dropped.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
            crossbeam_epoch::pin().flush();
            std::thread::yield_now();
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 100, "values of removed nodes dropped");
    }

    /// Numbers added in ascending order (nearly every insert), through `insert` (a new
    /// snapshot each) and through `append` (in place while the last chunk has room):
    /// the last chunk fills and a new one starts, every walk sees them all in order, a
    /// number already there is not added twice, and a walk begun before an append
    /// keeps its snapshot.
    #[test]
    fn a_group_index_appends_ascending_numbers_chunk_after_chunk() {
        for in_place in [false, true] {
            let index = GroupIndex::<u64>::default();
            let add = |n: u64| add_to(&index, in_place, 1, n);
            let all: Vec<u64> = (0..4 * GROUP_CHUNK as u64 + 3).map(|n| 10 + 2 * n).collect();
            for (k, &n) in all.iter().enumerate() {
                // A walk begun before the append (in place or not) ends where it began.
                let before = index.from(&1, 0);
                add(n);
                assert_eq!(before.count(), k, "{in_place}: a walk begun before {n}");
            }
            add(all[GROUP_CHUNK]);
            add(all[all.len() - 1]);
            assert_eq!(index.from(&1, 0).collect::<Vec<_>>(), all, "{in_place}");
            for k in [0, 1, GROUP_CHUNK - 1, GROUP_CHUNK, 2 * GROUP_CHUNK + 1, all.len() - 1] {
                assert_eq!(index.from(&1, all[k]).collect::<Vec<_>>(), all[k..], "from {}", all[k]);
                assert_eq!(index.from(&1, all[k] - 1).collect::<Vec<_>>(), all[k..]);
            }
            assert_eq!(index.from(&1, all[all.len() - 1] + 1).count(), 0);
            let before = index.from(&1, all[all.len() - 2]);
            add(10_000);
            assert_eq!(before.collect::<Vec<_>>(), all[all.len() - 2..]);
            assert_eq!(
                index.from(&1, all[all.len() - 1]).collect::<Vec<_>>(),
                [all[all.len() - 1], 10_000]
            );
            // One between members after the appends goes into its chunk.
            add(11);
            assert_eq!(index.from(&1, 0).take(3).collect::<Vec<_>>(), [10, 11, 12]);
            assert_eq!(index.from(&1, 0).count(), all.len() + 2);
            // A small group: one number, then a second in place, then past its room.
            for n in [5, 6, 7, 8, 9] {
                add_to(&index, in_place, 2, n);
            }
            assert_eq!(index.from(&2, 6).collect::<Vec<_>>(), [6, 7, 8, 9]);
        }
    }

    fn add_to(index: &GroupIndex<u64>, in_place: bool, group: u64, n: u64) {
        if in_place {
            index.append(group, n)
        } else {
            index.insert(group, n)
        }
    }

    /// The one writer appends in place while readers walk: every walk sees an
    /// ascending run from the first number with no number it was not given, never a
    /// slot before it is set.
    #[test]
    fn a_group_index_appended_in_place_is_read_whole_while_it_grows() {
        let index = GroupIndex::<u64>::default();
        let done = std::sync::atomic::AtomicBool::new(false);
        let count = 20 * GROUP_CHUNK as u64;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        let seen: Vec<u64> = index.from(&7, 0).collect();
                        // Members are 1, 3, 5, …: the first k odd numbers exactly.
                        let expected: Vec<u64> =
                            (0..seen.len() as u64).map(|n| 2 * n + 1).collect();
                        assert_eq!(seen, expected);
                    }
                });
            }
            for n in 0..count {
                index.append(7, 2 * n + 1);
            }
            done.store(true, Ordering::Release);
        });
        assert_eq!(index.from(&7, 0).count() as u64, count);
    }

    #[test]
    fn a_group_index_walks_each_group_in_order_from_any_number() {
        let index = GroupIndex::<u64>::default();
        assert_eq!(index.from(&1, 0).count(), 0);
        // Three groups, members set by four threads in scattered order (a parallel
        // load), some twice; several chunks' worth, so chunks fill, split and append.
        let members = |group: u64| -> Vec<u64> {
            (0..3 * GROUP_CHUNK as u64 + 5).map(|n| n * 3 + group).collect()
        };
        std::thread::scope(|s| {
            for share in 0..4 {
                let index = &index;
                s.spawn(move || {
                    for group in 0..3 {
                        for &n in members(group).iter().rev().skip(share).step_by(3) {
                            index.insert(group, n);
                        }
                    }
                });
            }
        });
        for group in 0..3 {
            let all = members(group);
            assert_eq!(index.from(&group, 0).collect::<Vec<_>>(), all, "group {group}");
            // From a member, from between two members, past the last.
            let from = all[GROUP_CHUNK + 1];
            assert_eq!(index.from(&group, from).collect::<Vec<_>>(), all[GROUP_CHUNK + 1..]);
            assert_eq!(index.from(&group, from + 1).collect::<Vec<_>>(), all[GROUP_CHUNK + 2..]);
            assert_eq!(index.from(&group, all[all.len() - 1] + 1).count(), 0);
        }
        assert_eq!(index.from(&7, 0).count(), 0);
        index.insert(9, u64::MAX - 1);
        index.insert(9, u64::MAX);
        assert_eq!(index.from(&9, 0).collect::<Vec<_>>(), [u64::MAX - 1, u64::MAX]);
        assert_eq!(index.from(&9, u64::MAX).collect::<Vec<_>>(), [u64::MAX]);
        // A walk goes on over the snapshot it began with.
        let mut walk = index.from(&0, 0);
        assert_eq!(walk.next(), Some(0));
        index.insert(0, 1);
        assert_eq!(walk.next(), Some(3));
        assert_eq!(index.from(&0, 0).take(3).collect::<Vec<_>>(), [0, 1, 3]);
    }

    impl SeqValue for u64 {
        fn to_bits(self) -> u128 {
            // Both halves, so a value torn between them would show.
            u128::from(self) << 64 | u128::from(!self)
        }

        fn from_bits(bits: u128) -> Self {
            let (high, low) = ((bits >> 64) as u64, bits as u64);
            assert_eq!(low, !high, "a value read whole");
            high
        }
    }

    #[test]
    fn a_sequence_index_walks_its_numbers_in_order_whatever_order_they_were_set_in() {
        let index = SeqIndex::<u64>::default();
        assert_eq!(index.from(0).count(), 0);
        // Across leaves and mid-level arrays, set by four threads in scattered order,
        // as a table's parallel load does; one number in three is left out.
        let leaf = SEQ_LEAF_SLOTS as u64;
        let mid = leaf << SEQ_MID_BITS;
        let mut numbers: Vec<u64> = (1..3 * leaf).filter(|n| n % 3 != 0).collect();
        numbers.extend([mid - 1, mid, mid + 1, 5 * mid + 7, SEQ_END - 1]);
        std::thread::scope(|s| {
            for share in 0..4 {
                let (index, numbers) = (&index, &numbers);
                s.spawn(move || {
                    for &n in numbers.iter().rev().skip(share).step_by(4) {
                        index.insert(n, n * 10);
                    }
                });
            }
        });
        for &n in &numbers {
            assert_eq!(index.get(n), Some(n * 10), "{n}");
        }
        for absent in [0, 3, 3 * leaf, mid + 2, 4 * mid, SEQ_END, u64::MAX] {
            assert_eq!(index.get(absent), None, "{absent}");
        }
        let walked: Vec<(u64, u64)> = index.from(0).collect();
        assert_eq!(walked, numbers.iter().map(|&n| (n, n * 10)).collect::<Vec<_>>());
        let tail: Vec<u64> = index.from(mid).map(|(n, _)| n).collect();
        assert_eq!(tail, [mid, mid + 1, 5 * mid + 7, SEQ_END - 1]);
        assert_eq!(index.from(SEQ_END).count(), 0);
        assert_eq!(index.from(u64::MAX).count(), 0);
    }
}
