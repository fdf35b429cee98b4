//! Work a query or a document repeats from one to the next, done once and kept: the
//! English stem of a word, the automaton that accepts a word's near spellings, and the
//! documents of a segment that automaton finds.
//!
//! Each is a pure function of its input, so a kept answer is the answer. Each is
//! bounded: a table past its bound is emptied and fills again with what is asked next,
//! so an attacker who sends new words each time costs the work they would cost anyway
//! and no memory beyond the bound.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};

use foldhash::fast::RandomState;
use levenshtein_automata::{Distance, LevenshteinAutomatonBuilder, DFA};
use parking_lot::Mutex;
use rust_stemmers::Algorithm;
use tantivy::index::SegmentId;
use tantivy::schema::{Field, IndexRecordOption, Term};
use tantivy::tokenizer::{Token, TokenFilter, TokenStream, Tokenizer};
use tantivy::SegmentReader;

use crate::words::DocBits;

/// Shards of each table: two threads rarely wait for one lock.
const SHARDS: usize = 16;
/// Stems kept per shard. A word is at most 40 bytes (longer ones are dropped before
/// stemming) and its stem no longer, so a full table holds under 16 MB.
const STEMS_PER_SHARD: usize = 4096;
/// Automaton states kept per shard, 1 kB each (a transition per byte value): 2 MB per
/// shard, 32 MB in all. A word of 8 characters at distance 2 takes about 200, one of 4
/// at distance 1 about 40.
const DFA_STATES_PER_SHARD: usize = 2048;
/// Bytes of document sets kept per shard (a bit per document of the segment): 2 MB,
/// 32 MB in all, about 2,600 sets of a 100,000-product segment.
const DOCS_BYTES_PER_SHARD: usize = 2 << 20;

/// A table of kept answers, in shards that each hold at most `budget` units. Keys are
/// hashed with foldhash, seeded at random per process (as hashbrown's maps are): a
/// lookup is on every word of every query and snippet, where SipHash cost a few
/// percent of a search.
struct Memo<K, V> {
    hasher: RandomState,
    shards: Vec<Mutex<Shard<K, V>>>,
    budget: usize,
}

struct Shard<K, V> {
    entries: HashMap<K, V, RandomState>,
    used: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn new(budget: usize) -> Memo<K, V> {
        Memo {
            hasher: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard { entries: HashMap::default(), used: 0 }))
                .collect(),
            budget,
        }
    }

    fn shard<Q: std::hash::Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The kept answer for `key`, or `make`'s, kept if it fits (`cost` units). `make`
    /// runs outside the lock.
    fn get_or<Q>(&self, key: &Q, make: impl FnOnce() -> (K, V, usize)) -> V
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        match self.try_get_or(key, || Ok::<_, std::convert::Infallible>(make())) {
            Ok(value) => value,
        }
    }

    /// [`Memo::get_or`] for a `make` that may fail: a failure is not kept.
    fn try_get_or<Q, E>(
        &self,
        key: &Q,
        make: impl FnOnce() -> Result<(K, V, usize), E>,
    ) -> Result<V, E>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        if let Some(value) = shard.lock().entries.get(key) {
            return Ok(value.clone());
        }
        let (key, value, cost) = make()?;
        if cost <= self.budget {
            let mut shard = shard.lock();
            if shard.used + cost > self.budget {
                shard.entries.clear();
                shard.used = 0;
            }
            if shard.entries.insert(key, value.clone()).is_none() {
                shard.used += cost;
            }
        }
        Ok(value)
    }
}

/// The English stems of the words seen, shared by every analyser of the process.
static STEMS: LazyLock<Memo<Box<str>, Arc<str>>> = LazyLock::new(|| Memo::new(STEMS_PER_SHARD));

/// English stemming (Snowball, as [`tantivy::tokenizer::Stemmer`]) through a table of
/// the stems already computed: a catalog's words recur across its products and in
/// every page of snippets, and looking a word up costs less than stemming it again.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeptStemmer {
    /// When set, only the words that begin with one of these characters are stemmed,
    /// and the others pass as they are: for a highlighter that looks for a few stems.
    /// A Snowball English stem begins with its word's first character (a test checks
    /// it over every short word of the letters its rules change), so a word that
    /// begins otherwise cannot stem to one of them.
    initials: Option<Arc<[char]>>,
}

impl KeptStemmer {
    /// Stems only the words that begin with one of `initials`.
    pub(crate) fn only_initials(initials: impl IntoIterator<Item = char>) -> KeptStemmer {
        let mut initials: Vec<char> = initials.into_iter().collect();
        initials.sort_unstable();
        initials.dedup();
        KeptStemmer { initials: Some(initials.into()) }
    }
}

impl TokenFilter for KeptStemmer {
    type Tokenizer<T: Tokenizer> = KeptStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> KeptStemmerFilter<T> {
        KeptStemmerFilter { inner: tokenizer, initials: self.initials }
    }
}

#[derive(Clone)]
pub(crate) struct KeptStemmerFilter<T> {
    inner: T,
    initials: Option<Arc<[char]>>,
}

impl<T: Tokenizer> Tokenizer for KeptStemmerFilter<T> {
    type TokenStream<'a> = KeptStemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        KeptStemmerStream {
            tail: self.inner.token_stream(text),
            stemmer: None,
            initials: self.initials.as_deref(),
        }
    }
}

pub(crate) struct KeptStemmerStream<'a, T> {
    tail: T,
    /// Made on the first word the table does not hold.
    stemmer: Option<rust_stemmers::Stemmer>,
    initials: Option<&'a [char]>,
}

/// The English stem of `word`.
pub(crate) fn stem(stemmer: &mut Option<rust_stemmers::Stemmer>, word: &str) -> Arc<str> {
    STEMS.get_or(word, || {
        let stemmer =
            stemmer.get_or_insert_with(|| rust_stemmers::Stemmer::create(Algorithm::English));
        let stem: Arc<str> = stemmer.stem(word).into();
        (word.into(), stem.clone(), 1)
    })
}

impl<T: TokenStream> TokenStream for KeptStemmerStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(initials) = self.initials {
            if !token.text.chars().next().is_some_and(|c| initials.contains(&c)) {
                return true;
            }
        }
        let stem = stem(&mut self.stemmer, &token.text);
        if *stem != *token.text {
            token.text.clear();
            token.text.push_str(&stem);
        }
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

/// What a near-match automaton accepts: `word` within `distance` edits (a transposition
/// counting one), or any word that begins so.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NearKey {
    word: Box<str>,
    distance: u8,
    prefix: bool,
}

/// The automata built, by what they accept.
static AUTOMATA: LazyLock<Memo<NearKey, Arc<NearAutomaton>>> =
    LazyLock::new(|| Memo::new(DFA_STATES_PER_SHARD));

/// Levenshtein automaton builders by distance (0, 1, 2), transpositions costing one:
/// each is costly to make and then builds any word's automaton.
static BUILDERS: [LazyLock<LevenshteinAutomatonBuilder>; 3] = [
    LazyLock::new(|| LevenshteinAutomatonBuilder::new(0, true)),
    LazyLock::new(|| LevenshteinAutomatonBuilder::new(1, true)),
    LazyLock::new(|| LevenshteinAutomatonBuilder::new(2, true)),
];

/// A Levenshtein automaton over a term dictionary's bytes.
pub(crate) struct NearAutomaton(DFA);

impl tantivy_fst::Automaton for NearAutomaton {
    type State = u32;

    fn start(&self) -> u32 {
        self.0.initial_state()
    }

    fn is_match(&self, state: &u32) -> bool {
        matches!(self.0.distance(*state), Distance::Exact(_))
    }

    fn can_match(&self, state: &u32) -> bool {
        *state != levenshtein_automata::SINK_STATE
    }

    fn accept(&self, state: &u32, byte: u8) -> u32 {
        self.0.transition(*state, byte)
    }
}

/// The documents of one segment whose `field` holds a term a near-match automaton
/// accepts. A segment never changes once written (deletions are applied apart), so its
/// documents for an automaton are the same at every query until it is merged away.
#[derive(Clone, PartialEq, Eq, Hash)]
struct DocsKey {
    segment: SegmentId,
    field: Field,
    near: NearKey,
}

/// The documents found, by segment and automaton.
static DOCS: LazyLock<Memo<DocsKey, Arc<DocBits>>> =
    LazyLock::new(|| Memo::new(DOCS_BYTES_PER_SHARD));

/// The terms of `field` within `distance` edits of `word` (a transposition counting
/// one), or, with `prefix`, the terms that begin with such a word: what
/// [`tantivy::query::FuzzyTermQuery`] matches. `WordsQuery` reads its documents
/// ([`NearQuery::docs`]); as a tantivy query (scoring 1), it serves the tests that
/// compare it with `FuzzyTermQuery`. The automaton is built once per word, and the
/// documents it finds once per segment, and both are kept (what Lucene's query cache
/// does for filters): otherwise every query walks each segment's term dictionary with
/// the automaton and reads the postings of every term it accepts.
#[derive(Clone)]
pub(crate) struct NearQuery {
    field: Field,
    near: NearKey,
}

impl std::fmt::Debug for NearQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearQuery")
            .field("field", &self.field)
            .field("word", &self.near.word)
            .field("distance", &self.near.distance)
            .field("prefix", &self.near.prefix)
            .finish()
    }
}

impl NearQuery {
    /// `distance` is at most 2.
    pub(crate) fn new(field: Field, word: &str, distance: u8, prefix: bool) -> NearQuery {
        NearQuery { field, near: NearKey { word: word.into(), distance: distance.min(2), prefix } }
    }

    /// Whether every document with `term` matches this query too: `term` is its own
    /// word, in its field (an automaton accepts its word at any distance, and as a
    /// prefix).
    pub(crate) fn covers(&self, term: &Term) -> bool {
        term.field() == self.field && term.value().as_str() == Some(&*self.near.word)
    }
}

#[cfg(test)]
impl tantivy::query::Query for NearQuery {
    fn weight(
        &self,
        _: tantivy::query::EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl NearKey {
    fn automaton(&self) -> Arc<NearAutomaton> {
        AUTOMATA.get_or(self, || {
            let builder = &*BUILDERS[usize::from(self.distance)];
            let dfa = if self.prefix {
                builder.build_prefix_dfa(&self.word)
            } else {
                builder.build_dfa(&self.word)
            };
            let states = dfa.num_states();
            (self.clone(), Arc::new(NearAutomaton(dfa)), states)
        })
    }
}

impl NearQuery {
    /// The documents of `reader`'s segment that match, as tantivy's `AutomatonWeight`
    /// finds them.
    pub(crate) fn docs(&self, reader: &SegmentReader) -> tantivy::Result<Arc<DocBits>> {
        let key =
            DocsKey { segment: reader.segment_id(), field: self.field, near: self.near.clone() };
        DOCS.try_get_or(&key, || {
            let automaton = self.near.automaton();
            let mut docs = DocBits::new(reader.max_doc());
            let inverted_index = reader.inverted_index(self.field)?;
            let mut terms = inverted_index.terms().search(&*automaton).into_stream()?;
            while terms.advance() {
                let mut postings = inverted_index
                    .read_block_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
                while !postings.docs().is_empty() {
                    for &doc in postings.docs() {
                        docs.insert(doc);
                    }
                    postings.advance();
                }
            }
            let bytes = docs.bytes();
            Ok((key.clone(), Arc::new(docs), bytes))
        })
    }
}

#[cfg(test)]
impl tantivy::query::Weight for NearQuery {
    fn scorer(
        &self,
        reader: &SegmentReader,
        boost: tantivy::Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        let docs = crate::words::BitsDocSet::new(self.docs(reader)?);
        Ok(Box::new(tantivy::query::ConstScorer::new(docs, boost)))
    }

    fn explain(
        &self,
        reader: &SegmentReader,
        doc: tantivy::DocId,
    ) -> tantivy::Result<tantivy::query::Explanation> {
        if self.docs(reader)?.contains(doc) {
            Ok(tantivy::query::Explanation::new("NearQuery", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!("document {doc} does not match")))
        }
    }
}

#[cfg(test)]
mod tests {
    use tantivy::collector::DocSetCollector;
    use tantivy::query::{FuzzyTermQuery, Query, Weight};
    use tantivy::schema::{Schema, TEXT};
    use tantivy::tokenizer::{Language, SimpleTokenizer, Stemmer, TextAnalyzer};
    use tantivy::{doc, DocId, Index, Term};

    use super::*;
    use crate::tokens;

    const WORDS: &str = "running runs ran runner happily happiness skies dying lying \
        generously relational conditional abilities hopefulness iPhones cases wireless \
        headphones boxes flies agreed feed news gently ÉLAN café naïve über \
        straße 東京 sıcak connection connections connective electricity electrical";

    #[test]
    fn kept_stems_are_the_stemmers_the_first_time_and_after() {
        let mut kept = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(KeptStemmer::default())
            .build();
        let mut plain = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(Stemmer::new(Language::English))
            .build();
        let expected = tokens(&mut plain, WORDS);
        assert!(expected.contains(&"run".to_string()), "{expected:?}");
        for _ in 0..3 {
            assert_eq!(tokens(&mut kept, WORDS), expected);
        }
    }

    /// What `KeptStemmer::only_initials` relies on. The Snowball English rules rewrite
    /// endings (y/i, e, s, d, n, g, l, the suffixes made of them) and a list of
    /// exceptions; every word of up to five of those letters (and a vowel or two), and
    /// the exceptions, keep their first character.
    #[test]
    fn a_stem_begins_with_its_words_first_character() {
        let letters = ['a', 'e', 'i', 'o', 'y', 's', 'd', 'n', 'g', 'l', 't'];
        let mut stemmer = None;
        let mut words: Vec<String> = "skis skies dying lying tying idly gently ugly early \
            only singly news howe atlas cosmos bias andes yes yelling ayes you youth"
            .split_whitespace()
            .map(String::from)
            .collect();
        words.extend(WORDS.split_whitespace().map(str::to_lowercase));
        let mut word = Vec::new();
        for n in 0..letters.len().pow(5) {
            word.clear();
            let mut rest = n;
            while word.len() < 5 {
                word.push(letters[rest % letters.len()]);
                rest /= letters.len();
                if rest == 0 {
                    break;
                }
            }
            words.push(word.iter().collect());
        }
        for word in &words {
            let stem = stem(&mut stemmer, word);
            assert_eq!(stem.chars().next(), word.chars().next(), "{word} stems to {stem}");
        }
    }

    #[test]
    fn only_the_words_of_the_initials_are_stemmed() {
        let mut some = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(KeptStemmer::only_initials(['r', 'h']))
            .build();
        assert_eq!(
            tokens(&mut some, "running happily generously skies"),
            ["run", "happili", "generously", "skies"]
        );
    }

    #[test]
    fn a_full_table_empties_and_keeps_answering() {
        let memo: Memo<u32, u32> = Memo::new(3);
        let mut made = 0;
        for round in 0..4 {
            for key in 0..100u32 {
                let value = memo.get_or(&key, || {
                    made += 1;
                    (key, key * 2, 1)
                });
                assert_eq!(value, key * 2, "round {round}");
            }
        }
        assert!(made > 100, "a bound of 3 per shard cannot keep 100 keys: made {made}");
        for shard in &memo.shards {
            let shard = shard.lock();
            assert!(shard.used <= 3 && shard.entries.len() == shard.used);
        }
        // Too costly to keep at all: answered, not kept.
        assert_eq!(memo.get_or(&1000, || (1000, 7, 4)), 7);
        assert_eq!(memo.get_or(&1000, || (1000, 8, 4)), 8);
    }

    #[test]
    fn a_near_query_matches_what_the_fuzzy_term_query_matches() {
        let mut builder = Schema::builder();
        let text = builder.add_text_field("text", TEXT);
        let index = Index::create_in_ram(builder.build());
        let mut writer: tantivy::IndexWriter =
            index.writer_with_num_threads(1, 15_000_000).unwrap();
        let words: Vec<&str> = WORDS.split(' ').filter(|w| !w.is_empty()).collect();
        for word in &words {
            writer.add_document(doc!(text => *word)).unwrap();
        }
        writer.add_document(doc!(text => "runing rnuning runnin wirless wireles")).unwrap();
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let docs = |query: &dyn Query| searcher.search(query, &DocSetCollector).unwrap();
        for word in ["running", "wireless", "connection", "cafe", "run", "happi", "x"] {
            for distance in 0..=2u8 {
                for prefix in [false, true] {
                    let term = Term::from_field_text(text, word);
                    let fuzzy = if prefix {
                        FuzzyTermQuery::new_prefix(term, distance, true)
                    } else {
                        FuzzyTermQuery::new(term, distance, true)
                    };
                    // Twice: built, then kept.
                    for _ in 0..2 {
                        let near = NearQuery::new(text, word, distance, prefix);
                        assert_eq!(docs(&near), docs(&fuzzy), "{word} {distance} {prefix}");
                    }
                }
            }
        }
        assert!(!docs(&NearQuery::new(text, "runnig", 1, false)).is_empty());
        // A document past the segment's end does not match (and does not panic).
        let reader = searcher.segment_reader(0);
        let near = NearQuery::new(text, "running", 1, false);
        assert!(Weight::explain(&near, reader, 0).is_ok(), "the first document is \"running\"");
        assert!(Weight::explain(&near, reader, reader.max_doc()).is_err());
        assert!(Weight::explain(&near, reader, DocId::MAX).is_err());

        // A later segment, and a deletion: the kept sets are per segment, and deleted
        // documents stay out.
        writer.add_document(doc!(text => "rnning")).unwrap();
        writer.delete_term(Term::from_field_text(text, "wireles"));
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let docs = |query: &dyn Query| searcher.search(query, &DocSetCollector).unwrap();
        for word in ["running", "wireless"] {
            let term = Term::from_field_text(text, word);
            let fuzzy = FuzzyTermQuery::new(term, 2, true);
            let near = NearQuery::new(text, word, 2, false);
            assert_eq!(docs(&near), docs(&fuzzy), "{word}");
        }
        assert_eq!(docs(&NearQuery::new(text, "wirel", 0, true)).len(), 1, "wireless only");
    }
}
