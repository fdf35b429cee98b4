//! A hit's stored fields: read from the document store straight into the hit, and kept
//! in memory, up to a bound, by segment and document.
//!
//! Read as a `TantivyDocument`, each value is decoded into an owned value, copied into
//! the document's compact buffer, then copied again into the hit. [`StoredHit`] takes
//! each string as it is decoded and keeps only the fields a hit shows. Reading one from
//! the store still costs a lookup in the store's skip index, in its cache of blocks
//! (behind a lock) and the decoding; the pages of a shop's queries show the same
//! products again and again, so [`HitCache`] keeps what it read. A segment never
//! changes once written, so a kept hit is never stale; the segments merged away are
//! let go when the reader moves past them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use parking_lot::RwLock;
use tantivy::index::SegmentId;
use tantivy::{DocAddress, Searcher};

use tantivy::schema::document::{
    DeserializeError, DocumentDeserialize, DocumentDeserializer, ValueDeserialize,
    ValueDeserializer, ValueVisitor,
};

use crate::snippets::Highlighter;
use crate::{Fields, Hit};

/// The schema's fields: their numbers are fixed by the order [`crate::schema`] adds
/// them in, the same for every index this code opens.
static FIELDS: LazyLock<Fields> = LazyLock::new(|| crate::schema().1);

/// What the store holds of one product that a hit shows.
#[derive(Debug, Default)]
pub(crate) struct StoredHit {
    id: String,
    title: String,
    description: String,
    brand: String,
    currency: String,
    price: i64,
    rating: f64,
    in_stock: bool,
}

impl StoredHit {
    /// The memory it takes, with its place in a [`HitCache`].
    fn bytes(&self) -> usize {
        let text = [&self.id, &self.title, &self.description, &self.brand, &self.currency];
        std::mem::size_of::<StoredHit>()
            + 2 * std::mem::size_of::<usize>()
            + text.iter().map(|t| t.capacity()).sum::<usize>()
    }

    /// The hit, with the title and description marked by `highlights` if given.
    pub(crate) fn to_hit(
        &self,
        score: f32,
        highlights: Option<&mut (Highlighter, Highlighter)>,
    ) -> Hit {
        let (title_highlight, description_highlight) = match highlights {
            Some((title, description)) => {
                (title.html(&self.title), description.html(&self.description))
            }
            None => (None, None),
        };
        Hit {
            id: self.id.clone(),
            title: self.title.clone(),
            brand: self.brand.clone(),
            price: self.price,
            currency: self.currency.clone(),
            rating: self.rating,
            in_stock: self.in_stock,
            score,
            title_highlight,
            description_highlight,
        }
    }
}

impl DocumentDeserialize for StoredHit {
    fn deserialize<'de, D>(mut fields: D) -> Result<StoredHit, DeserializeError>
    where
        D: DocumentDeserializer<'de>,
    {
        let f = &*FIELDS;
        let mut hit = StoredHit::default();
        // A field stored twice keeps its first value, as `Document::get_first` reads it.
        let mut seen = [false; 8];
        let shown =
            [f.id, f.title, f.description, f.brand, f.currency, f.price, f.rating, f.in_stock];
        while let Some((field, value)) = fields.next_field::<Stored>()? {
            let Some(slot) = shown.iter().position(|s| *s == field) else {
                continue;
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            match (slot, value) {
                (0, Stored::Text(text)) => hit.id = text,
                (1, Stored::Text(text)) => hit.title = text,
                (2, Stored::Text(text)) => hit.description = text,
                (3, Stored::Text(text)) => hit.brand = text,
                (4, Stored::Text(text)) => hit.currency = text,
                (5, Stored::I64(price)) => hit.price = price,
                (6, Stored::F64(rating)) => hit.rating = rating,
                (7, Stored::Bool(in_stock)) => hit.in_stock = in_stock,
                // A value of another type than the schema's: the field reads as unset.
                _ => {}
            }
        }
        Ok(hit)
    }
}

/// A stored value of one of the types the schema stores.
enum Stored {
    Text(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    Other,
}

impl ValueDeserialize for Stored {
    fn deserialize<'de, D>(value: D) -> Result<Stored, DeserializeError>
    where
        D: ValueDeserializer<'de>,
    {
        value.deserialize_any(StoredVisitor)
    }
}

struct StoredVisitor;

impl ValueVisitor for StoredVisitor {
    type Value = Stored;

    fn visit_null(&self) -> Result<Stored, DeserializeError> {
        Ok(Stored::Other)
    }

    fn visit_string(&self, text: String) -> Result<Stored, DeserializeError> {
        Ok(Stored::Text(text))
    }

    fn visit_u64(&self, _: u64) -> Result<Stored, DeserializeError> {
        Ok(Stored::Other)
    }

    fn visit_i64(&self, value: i64) -> Result<Stored, DeserializeError> {
        Ok(Stored::I64(value))
    }

    fn visit_f64(&self, value: f64) -> Result<Stored, DeserializeError> {
        Ok(Stored::F64(value))
    }

    fn visit_bool(&self, value: bool) -> Result<Stored, DeserializeError> {
        Ok(Stored::Bool(value))
    }
}

/// Stored hits kept in memory by segment and document, up to a number of bytes.
pub(crate) struct HitCache {
    segments: RwLock<HashMap<SegmentId, Arc<SegmentHits>>>,
    /// What the kept hits and the segments' tables of them take.
    bytes: AtomicUsize,
    bytes_max: usize,
}

/// One segment's kept hits, by document number.
struct SegmentHits {
    docs: Box<[OnceLock<Arc<StoredHit>>]>,
    /// What this segment's table and hits take (counted in the cache's total too).
    bytes: AtomicUsize,
    /// Let go by [`HitCache::retain`]: what is added after is taken off the total by
    /// whoever adds it (each amount is swapped out of `bytes` once).
    retired: std::sync::atomic::AtomicBool,
}

impl SegmentHits {
    /// Takes what the segment counts off `total`, leaving it at 0.
    fn release(&self, total: &AtomicUsize) {
        total.fetch_sub(self.bytes.swap(0, Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl HitCache {
    /// A cache that keeps at most `bytes_max` bytes of hits.
    pub(crate) fn new(bytes_max: usize) -> HitCache {
        HitCache { segments: RwLock::default(), bytes: AtomicUsize::new(0), bytes_max }
    }

    /// The stored fields of the hit at `address`: kept, or read from the store and
    /// kept if the bound allows.
    pub(crate) fn get(
        &self,
        searcher: &Searcher,
        address: DocAddress,
    ) -> tantivy::Result<Arc<StoredHit>> {
        let reader = searcher.segment_reader(address.segment_ord);
        let segment = self.segment(reader.segment_id(), reader.max_doc());
        let slot = segment.as_ref().and_then(|s| s.docs.get(address.doc_id as usize));
        if let Some(hit) = slot.and_then(OnceLock::get) {
            return Ok(hit.clone());
        }
        let hit: Arc<StoredHit> = Arc::new(searcher.doc(address)?);
        if let (Some(segment), Some(slot)) = (&segment, slot) {
            let size = hit.bytes();
            if self.reserve(size) {
                if slot.set(hit.clone()).is_ok() {
                    segment.bytes.fetch_add(size, Ordering::SeqCst);
                    if segment.retired.load(Ordering::SeqCst) {
                        segment.release(&self.bytes);
                    }
                } else {
                    // Another search kept it first.
                    self.bytes.fetch_sub(size, Ordering::SeqCst);
                }
            }
        }
        Ok(hit)
    }

    /// Counts `size` more bytes if they fit under the bound.
    fn reserve(&self, size: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(size).filter(|total| *total <= self.bytes_max)
            })
            .is_ok()
    }

    /// The table of a segment's hits, made if the bound allows.
    fn segment(&self, id: SegmentId, max_doc: u32) -> Option<Arc<SegmentHits>> {
        if let Some(segment) = self.segments.read().get(&id) {
            return Some(segment.clone());
        }
        let mut segments = self.segments.write();
        if let Some(segment) = segments.get(&id) {
            return Some(segment.clone());
        }
        let size = max_doc as usize * std::mem::size_of::<OnceLock<Arc<StoredHit>>>();
        if !self.reserve(size) {
            return None;
        }
        let docs = (0..max_doc).map(|_| OnceLock::new()).collect();
        let segment = Arc::new(SegmentHits {
            docs,
            bytes: AtomicUsize::new(size),
            retired: Default::default(),
        });
        segments.insert(id, segment.clone());
        Some(segment)
    }

    /// Lets go of the hits of every segment but `live` (the reader's after a reload).
    pub(crate) fn retain(&self, live: &[SegmentId]) {
        self.segments.write().retain(|id, segment| {
            let keep = live.contains(id);
            if !keep {
                segment.retired.store(true, Ordering::SeqCst);
                segment.release(&self.bytes);
            }
            keep
        });
    }

    /// The hits kept, and the bytes they and their tables take.
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        let kept = self
            .segments
            .read()
            .values()
            .map(|s| s.docs.iter().filter(|d| d.get().is_some()).count())
            .sum();
        (kept, self.bytes.load(Ordering::SeqCst))
    }
}
