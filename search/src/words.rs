//! Matching the words of a query as sets of documents.
//!
//! A query's text asks that every word match somewhere: exactly in one of four fields,
//! nearly (a typo) in two, or, for the last word, as a prefix. Written as a boolean
//! query of a union per word, tantivy walks the postings of every alternative of every
//! word, scoring each document of each union, and the intersection then throws most of
//! them away. [`WordsQuery`] finds the documents first (for each word, the bits of its
//! alternatives' documents or'ed together; across words, and'ed) and scores only the
//! documents found, each by the same sum the boolean query would compute.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::fieldnorm::FieldNormReader;
use tantivy::index::SegmentId;
use tantivy::postings::{Postings, SegmentPostings};
use tantivy::query::{Bm25Weight, EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{IndexRecordOption, Term};
use tantivy::{DocId, DocSet, Score, SegmentReader, TantivyError, TERMINATED};

use crate::memo::NearQuery;

/// A set of a segment's documents, a bit each.
pub(crate) struct DocBits {
    words: Box<[u64]>,
}

impl DocBits {
    /// An empty set of documents below `max_doc`.
    pub(crate) fn new(max_doc: u32) -> DocBits {
        DocBits { words: vec![0; (max_doc as usize).div_ceil(64)].into() }
    }

    /// Adds `doc`, which is below the set's `max_doc`.
    pub(crate) fn insert(&mut self, doc: DocId) {
        self.words[doc as usize / 64] |= 1 << (doc % 64);
    }

    pub(crate) fn contains(&self, doc: DocId) -> bool {
        self.words.get(doc as usize / 64).is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    /// The documents in `self` or in `other` (of the same segment).
    fn union_with(&mut self, other: &DocBits) {
        for (mine, theirs) in self.words.iter_mut().zip(other.words.iter()) {
            *mine |= theirs;
        }
    }

    /// The documents in both `self` and `other` (of the same segment).
    fn intersect_with(&mut self, other: &DocBits) {
        for (mine, theirs) in self.words.iter_mut().zip(other.words.iter()) {
            *mine &= theirs;
        }
    }

    fn len(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The memory the set takes.
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

impl std::fmt::Debug for DocBits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DocBits({} of {})", self.len(), self.words.len() * 64)
    }
}

/// The documents of a [`DocBits`] in order.
pub(crate) struct BitsDocSet<B> {
    bits: B,
    /// The word of `bits` being read and its bits not yet returned.
    word: usize,
    rest: u64,
    doc: DocId,
    len: u32,
}

impl<B: std::ops::Deref<Target = DocBits>> BitsDocSet<B> {
    pub(crate) fn new(bits: B) -> BitsDocSet<B> {
        let len = bits.len();
        let rest = bits.words.first().copied().unwrap_or(0);
        let mut docs = BitsDocSet { bits, word: 0, rest, doc: 0, len };
        docs.next_set();
        docs
    }

    fn next_set(&mut self) -> DocId {
        while self.rest == 0 {
            match self.bits.words.get(self.word + 1) {
                Some(word) => {
                    self.word += 1;
                    self.rest = *word;
                }
                None => {
                    self.doc = TERMINATED;
                    return TERMINATED;
                }
            }
        }
        let bit = self.rest.trailing_zeros();
        self.rest &= self.rest - 1;
        self.doc = self.word as u32 * 64 + bit;
        self.doc
    }
}

impl<B: std::ops::Deref<Target = DocBits> + Send> DocSet for BitsDocSet<B> {
    fn advance(&mut self) -> DocId {
        self.next_set()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        let word = target as usize / 64;
        match self.bits.words.get(word) {
            None => {
                self.rest = 0;
                self.word = self.bits.words.len();
                self.doc = TERMINATED;
                return TERMINATED;
            }
            Some(bits) if word > self.word => {
                self.word = word;
                self.rest = *bits;
            }
            Some(_) => {}
        }
        self.rest &= u64::MAX << (target % 64);
        self.next_set()
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.len
    }
}

/// One word of a query and the ways a document may match it.
#[derive(Clone, Debug)]
pub(crate) struct WordMatch {
    /// A document must match this word (unless no word is required: then any word).
    pub(crate) required: bool,
    /// Terms matched exactly, each scoring its BM25 times the boost beside it.
    pub(crate) exact: Vec<(Term, Score)>,
    /// Near (or prefix) matches, each scoring the constant beside it.
    pub(crate) near: Vec<(NearQuery, Score)>,
}

/// The documents that match every required word (any word, when none is required),
/// each scored by the sum, over its words, of the scores of every way it matches them:
/// what a boolean query of a union per word finds and scores.
#[derive(Clone, Debug)]
pub(crate) struct WordsQuery {
    words: Arc<[WordMatch]>,
    /// The documents found in each segment, shared by the clones of this query: a
    /// query's facet counts run it again with other filters.
    found: Arc<Mutex<HashMap<SegmentId, Arc<DocBits>>>>,
}

impl WordsQuery {
    pub(crate) fn new(words: Vec<WordMatch>) -> WordsQuery {
        WordsQuery { words: words.into(), found: Arc::default() }
    }
}

/// What [`WordsQuery`] stands for: a boolean query of a union per word, each word's
/// clause required or optional.
#[cfg(test)]
pub(crate) fn as_boolean(words: &[WordMatch]) -> tantivy::query::BooleanQuery {
    use tantivy::query::{BooleanQuery, BoostQuery, ConstScoreQuery, Occur, TermQuery};
    let clauses = words.iter().map(|word| {
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (term, boost) in &word.exact {
            let exact = TermQuery::new(term.clone(), IndexRecordOption::WithFreqs);
            alternatives.push((Occur::Should, Box::new(BoostQuery::new(Box::new(exact), *boost))));
        }
        for (near, score) in &word.near {
            let near = ConstScoreQuery::new(Box::new(near.clone()), *score);
            alternatives.push((Occur::Should, Box::new(near)));
        }
        // With no word required, all are optional: any of them matches.
        let occur = if word.required { Occur::Must } else { Occur::Should };
        (occur, Box::new(BooleanQuery::new(alternatives)) as Box<dyn Query>)
    });
    BooleanQuery::new(clauses.collect())
}

impl Query for WordsQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let mut words = Vec::with_capacity(self.words.len());
        for word in self.words.iter() {
            let mut exact = Vec::with_capacity(word.exact.len());
            for (term, boost) in &word.exact {
                // As a `TermQuery`'s weight under a `BoostQuery` computes it.
                let bm25 = match scoring {
                    EnableScoring::Enabled { statistics_provider, .. } => Some(
                        Bm25Weight::for_terms(statistics_provider, std::slice::from_ref(term))?,
                    ),
                    EnableScoring::Disabled { .. } => None,
                };
                exact.push(ExactWeight { term: term.clone(), bm25, boost: *boost });
            }
            words.push(WordWeight { required: word.required, exact, near: word.near.clone() });
        }
        Ok(Box::new(WordsWeight {
            words,
            scoring: scoring.is_scoring_enabled(),
            found: self.found.clone(),
        }))
    }
}

struct WordWeight {
    required: bool,
    exact: Vec<ExactWeight>,
    near: Vec<(NearQuery, Score)>,
}

/// A term matched exactly: its BM25 weight over the whole index (when scoring), and its
/// boost.
struct ExactWeight {
    term: Term,
    bm25: Option<Bm25Weight>,
    boost: Score,
}

impl ExactWeight {
    /// The term's scorer in `reader`'s segment, or `None` when the segment has no
    /// document with it.
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Option<TermScorer>> {
        let Some(bm25) = &self.bm25 else {
            return Ok(None);
        };
        let field = self.term.field();
        let index = reader.inverted_index(field)?;
        let Some(postings) = index.read_postings(&self.term, IndexRecordOption::WithFreqs)? else {
            return Ok(None);
        };
        let norms = reader.fieldnorms_readers().get_field(field)?;
        let norms = norms.unwrap_or_else(|| FieldNormReader::constant(reader.max_doc(), 1));
        let bm25 = bm25.boost_by(boost * self.boost);
        Ok((postings.doc() != TERMINATED).then_some(TermScorer { postings, norms, bm25 }))
    }
}

/// A term's BM25 score in the documents of a segment: tantivy's `TermScorer` (which it
/// does not export), called without a box.
struct TermScorer {
    postings: SegmentPostings,
    norms: FieldNormReader,
    bm25: Bm25Weight,
}

impl TermScorer {
    /// The score in the document the postings are on.
    fn score(&self) -> Score {
        let doc = self.postings.doc();
        self.bm25.score(self.norms.fieldnorm_id(doc), self.postings.term_freq())
    }
}

impl WordWeight {
    /// The documents of `reader`'s segment that match this word in any way.
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<DocBits> {
        let mut docs = DocBits::new(reader.max_doc());
        for ExactWeight { term, .. } in &self.exact {
            // Mostly the title's and the brand's terms, whose typos are forgiven.
            if self.near.iter().any(|(near, _)| near.covers(term)) {
                continue;
            }
            let index = reader.inverted_index(term.field())?;
            if let Some(mut postings) = index.read_block_postings(term, IndexRecordOption::Basic)? {
                while !postings.docs().is_empty() {
                    for &doc in postings.docs() {
                        docs.insert(doc);
                    }
                    postings.advance();
                }
            }
        }
        for (near, _) in &self.near {
            docs.union_with(&*near.docs(reader)?);
        }
        Ok(docs)
    }
}

struct WordsWeight {
    words: Vec<WordWeight>,
    scoring: bool,
    found: Arc<Mutex<HashMap<SegmentId, Arc<DocBits>>>>,
}

impl WordsWeight {
    fn found(&self, reader: &SegmentReader) -> tantivy::Result<Arc<DocBits>> {
        let segment = reader.segment_id();
        if let Some(found) = self.found.lock().get(&segment) {
            return Ok(found.clone());
        }
        let any_required = self.words.iter().any(|w| w.required);
        let mut found: Option<DocBits> = None;
        for word in self.words.iter().filter(|w| w.required || !any_required) {
            let docs = word.docs(reader)?;
            match &mut found {
                None => found = Some(docs),
                Some(found) if any_required => found.intersect_with(&docs),
                Some(found) => found.union_with(&docs),
            }
            if any_required && found.as_ref().is_some_and(DocBits::is_empty) {
                break;
            }
        }
        let found = Arc::new(found.unwrap_or_else(|| DocBits::new(0)));
        self.found.lock().insert(segment, found.clone());
        Ok(found)
    }
}

impl Weight for WordsWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = BitsDocSet::new(self.found(reader)?);
        let mut parts = Vec::new();
        if self.scoring {
            for word in &self.words {
                for exact in &word.exact {
                    // A term this segment does not have (most words are in no brand
                    // and no SKU) would only be asked, per document found, where it is.
                    if let Some(scorer) = exact.scorer(reader, boost)? {
                        parts.push(Part::Exact(Box::new(scorer)));
                    }
                }
                for (near, score) in &word.near {
                    parts.push(Part::Near(near.docs(reader)?, score * boost));
                }
            }
        }
        Ok(Box::new(WordsScorer { docs, parts }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!("document {doc} does not match")));
        }
        Ok(Explanation::new("WordsQuery", scorer.score()))
    }
}

/// A way a found document may score.
enum Part {
    Exact(Box<TermScorer>),
    Near(Arc<DocBits>, Score),
}

struct WordsScorer {
    docs: BitsDocSet<Arc<DocBits>>,
    /// Empty when scoring is off.
    parts: Vec<Part>,
}

impl DocSet for WordsScorer {
    fn advance(&mut self) -> DocId {
        self.docs.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.docs.seek(target)
    }

    fn doc(&self) -> DocId {
        self.docs.doc()
    }

    fn size_hint(&self) -> u32 {
        self.docs.size_hint()
    }
}

impl Scorer for WordsScorer {
    fn score(&mut self) -> Score {
        let doc = self.docs.doc();
        let mut score = 0.0;
        for part in &mut self.parts {
            match part {
                Part::Exact(scorer) => {
                    let postings = &mut scorer.postings;
                    // Mostly the next posting, when a word's documents are most of
                    // those found: a step costs less than a search of the block.
                    if postings.doc() < doc && postings.advance() < doc {
                        postings.seek(doc);
                    }
                    if postings.doc() == doc {
                        score += scorer.score();
                    }
                }
                Part::Near(docs, near) => {
                    if docs.contains(doc) {
                        score += *near;
                    }
                }
            }
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(max_doc: u32, docs: &[DocId]) -> DocBits {
        let mut bits = DocBits::new(max_doc);
        for &doc in docs {
            bits.insert(doc);
        }
        bits
    }

    fn all(mut docs: impl DocSet) -> Vec<DocId> {
        let mut out = Vec::new();
        while docs.doc() != TERMINATED {
            out.push(docs.doc());
            docs.advance();
        }
        out
    }

    #[test]
    fn a_bit_set_yields_its_documents_in_order_and_seeks_to_the_next() {
        let docs = [0, 1, 63, 64, 65, 127, 128, 1000, 1023];
        let set = bits(1024, &docs);
        assert_eq!(all(BitsDocSet::new(&set)), docs);
        assert_eq!(BitsDocSet::new(&set).size_hint(), docs.len() as u32);
        assert_eq!(all(BitsDocSet::new(&DocBits::new(0))), Vec::<DocId>::new());
        assert_eq!(all(BitsDocSet::new(&DocBits::new(100))), Vec::<DocId>::new());
        for target in 0..1030 {
            let mut seeking = BitsDocSet::new(&set);
            let expected = docs.iter().copied().find(|&d| d >= target).unwrap_or(TERMINATED);
            assert_eq!(seeking.seek(target), expected, "seek({target})");
            assert_eq!(seeking.doc(), expected);
            // And on from there, as advance would go.
            let rest: Vec<DocId> = docs.iter().copied().filter(|&d| d > expected).collect();
            if expected != TERMINATED {
                assert_eq!(all(seeking), [vec![expected], rest].concat());
            }
        }
        let mut seeking = BitsDocSet::new(&set);
        assert_eq!(seeking.seek(64), 64);
        assert_eq!(seeking.seek(64), 64, "seeking to the current document stays");
        assert_eq!(seeking.seek(TERMINATED), TERMINATED);
        assert_eq!(seeking.advance(), TERMINATED);
    }

    #[test]
    fn sets_combine_word_by_word() {
        let mut a = bits(200, &[1, 70, 150, 199]);
        let b = bits(200, &[70, 151, 199]);
        a.union_with(&b);
        assert_eq!(all(BitsDocSet::new(&a)), [1, 70, 150, 151, 199]);
        a.intersect_with(&bits(200, &[1, 151, 198]));
        assert_eq!(all(BitsDocSet::new(&a)), [1, 151]);
        assert!(a.contains(151) && !a.contains(150) && !a.contains(5000));
        a.intersect_with(&DocBits::new(200));
        assert!(a.is_empty());
    }
}
