//! Facet counts: one pass over the matching documents reading their fast fields.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

use crate::{Facet, FACET_VALUES_MAX};

/// The price buckets, in minor units: `[from, next from)`; the last is open.
pub const PRICE_BUCKETS: [i64; 8] = [0, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];

/// Products per price range: `from` and `to` inclusive, in minor units (`to` is `None`
/// for the open last range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceBucket {
    /// The lowest price in the range.
    pub from: i64,
    /// The highest price in the range; `None` for the last, open one.
    pub to: Option<i64>,
    /// Products in the range.
    pub count: u64,
}

/// The counts of the facets asked for; a facet not asked for is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacetCounts {
    /// `(brand, products)`, most first, then by name; at most
    /// [`FACET_VALUES_MAX`].
    pub brand: Vec<(String, u64)>,
    /// `(category id, products in it or its descendants)`, likewise.
    pub category: Vec<(String, u64)>,
    /// The non-empty price ranges, cheapest first.
    pub price: Vec<PriceBucket>,
}

impl FacetCounts {
    pub(crate) fn merge(&mut self, facet: Facet, fruit: FacetFruit) {
        match facet {
            Facet::Brand => self.brand = top_values(fruit.values),
            Facet::Category => self.category = top_values(fruit.values),
            Facet::Price => {
                self.price = fruit
                    .prices
                    .iter()
                    .enumerate()
                    .filter(|(_, count)| **count > 0)
                    .map(|(i, count)| PriceBucket {
                        from: PRICE_BUCKETS[i],
                        to: PRICE_BUCKETS.get(i + 1).map(|next| next - 1),
                        count: *count,
                    })
                    .collect();
            }
        }
    }
}

fn top_values(values: HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut values: Vec<(String, u64)> =
        values.into_iter().filter(|(v, _)| !v.is_empty()).collect();
    values.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(FACET_VALUES_MAX);
    values
}

/// The bucket of a price.
fn bucket(price: i64) -> usize {
    PRICE_BUCKETS.partition_point(|from| *from <= price).saturating_sub(1)
}

/// Counts facets over the documents a query matches (none: counts nothing).
#[derive(Clone)]
pub(crate) struct FacetCollector {
    pub(crate) facets: Vec<Facet>,
}

#[derive(Default)]
pub(crate) struct FacetFruit {
    values: HashMap<String, u64>,
    prices: [u64; PRICE_BUCKETS.len()],
}

pub(crate) enum SegmentFacets {
    Values { column: Option<StrColumn>, by_ord: OrdCounts },
    Price { column: Column<i64>, prices: [u64; PRICE_BUCKETS.len()] },
}

/// A segment's dictionaries hold at most this many values for their counts to be kept
/// in an array indexed by the value's ordinal (16 kB, zeroed per query and segment);
/// past it, in a hash map of the ordinals seen.
const DENSE_ORDS_MAX: usize = 4096;

/// Documents per value ordinal of one segment's column.
pub(crate) enum OrdCounts {
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u64, foldhash::fast::RandomState>),
}

impl OrdCounts {
    fn for_column(column: Option<&StrColumn>) -> OrdCounts {
        match column.map(|c| c.num_terms()) {
            Some(terms) if terms <= DENSE_ORDS_MAX => OrdCounts::Dense(vec![0; terms]),
            _ => OrdCounts::Sparse(HashMap::default()),
        }
    }

    fn add(&mut self, ord: u64) {
        match self {
            OrdCounts::Dense(counts) => {
                // An ordinal past the dictionary (the column is not what it says) is
                // not counted.
                if let Some(count) = counts.get_mut(ord as usize) {
                    *count += 1;
                }
            }
            OrdCounts::Sparse(counts) => *counts.entry(ord).or_default() += 1,
        }
    }

    /// `(ordinal, documents)` for every value counted at least once, in ordinal order.
    fn counted(self) -> Vec<(u64, u64)> {
        match self {
            OrdCounts::Dense(counts) => counts
                .into_iter()
                .enumerate()
                .filter(|(_, count)| *count > 0)
                .map(|(ord, count)| (ord as u64, u64::from(count)))
                .collect(),
            OrdCounts::Sparse(counts) => {
                let mut counted: Vec<(u64, u64)> = counts.into_iter().collect();
                counted.sort_unstable();
                counted
            }
        }
    }
}

/// One segment's counters, one per facet.
pub(crate) struct SegmentCounts(Vec<(Facet, SegmentFacets)>);

impl Collector for FacetCollector {
    type Fruit = Vec<(Facet, FacetFruit)>;
    type Child = SegmentCounts;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentCounts> {
        let fast = segment.fast_fields();
        let mut counters = Vec::with_capacity(self.facets.len());
        for facet in &self.facets {
            let counter = match facet {
                Facet::Brand | Facet::Category => {
                    let name = if *facet == Facet::Brand { "brand_key" } else { "categories" };
                    let column = fast.str(name)?;
                    let by_ord = OrdCounts::for_column(column.as_ref());
                    SegmentFacets::Values { column, by_ord }
                }
                Facet::Price => SegmentFacets::Price {
                    column: fast.i64("price")?,
                    prices: [0; PRICE_BUCKETS.len()],
                },
            };
            counters.push((*facet, counter));
        }
        Ok(SegmentCounts(counters))
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(Facet, FacetFruit)>>,
    ) -> tantivy::Result<Vec<(Facet, FacetFruit)>> {
        let mut all: Vec<(Facet, FacetFruit)> =
            self.facets.iter().map(|f| (*f, FacetFruit::default())).collect();
        for segment in fruits {
            for ((_, total), (_, fruit)) in all.iter_mut().zip(segment) {
                for (value, count) in fruit.values {
                    *total.values.entry(value).or_default() += count;
                }
                for (sum, count) in total.prices.iter_mut().zip(fruit.prices) {
                    *sum += count;
                }
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for SegmentCounts {
    type Fruit = Vec<(Facet, FacetFruit)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        for (_, counter) in &mut self.0 {
            match counter {
                SegmentFacets::Values { column: Some(column), by_ord } => {
                    for ord in column.term_ords(doc) {
                        by_ord.add(ord);
                    }
                }
                SegmentFacets::Values { column: None, .. } => {}
                SegmentFacets::Price { column, prices } => {
                    if let Some(price) = column.first(doc) {
                        prices[bucket(price)] += 1;
                    }
                }
            }
        }
    }

    fn harvest(self) -> Vec<(Facet, FacetFruit)> {
        self.0
            .into_iter()
            .map(|(facet, counter)| {
                let mut fruit = FacetFruit::default();
                match counter {
                    SegmentFacets::Values { column: Some(column), by_ord } => {
                        // In ordinal order, the dictionary is read once through
                        // (looking each ordinal up alone decodes its block from the
                        // start: quadratic in the values of a block).
                        let counted = by_ord.counted();
                        let mut counts = counted.iter().map(|(_, count)| *count);
                        let read = column.dictionary().sorted_ords_to_term_cb(
                            counted.iter().map(|(ord, _)| *ord),
                            |term| {
                                let count = counts.next().unwrap_or(0);
                                let value = String::from_utf8_lossy(term).into_owned();
                                *fruit.values.entry(value).or_default() += count;
                                Ok(())
                            },
                        );
                        // A dictionary that cannot be read counts what it could give.
                        let _ = read;
                    }
                    SegmentFacets::Values { column: None, .. } => {}
                    SegmentFacets::Price { prices, .. } => fruit.prices = prices,
                }
                (facet, fruit)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_fall_in_their_bucket() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(999), 0);
        assert_eq!(bucket(1_000), 1);
        assert_eq!(bucket(99_999), 6);
        assert_eq!(bucket(100_000), 7);
        assert_eq!(bucket(i64::MAX), 7);
    }

    #[test]
    fn counts_by_ordinal_are_the_same_in_an_array_and_in_a_map() {
        let ords = [3u64, 0, 3, 7, 3, 0, 12];
        let mut dense = OrdCounts::Dense(vec![0; 10]);
        let mut sparse = OrdCounts::Sparse(HashMap::default());
        for ord in ords {
            dense.add(ord);
            sparse.add(ord);
        }
        assert_eq!(sparse.counted(), vec![(0, 2), (3, 3), (7, 1), (12, 1)]);
        // The array has no place for 12, past the 10 values its column said it has.
        assert_eq!(dense.counted(), vec![(0, 2), (3, 3), (7, 1)]);
    }
}
