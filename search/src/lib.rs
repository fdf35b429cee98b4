//! Emporium's product index, on Tantivy.
//!
//! The index is a derived view: the engine feeds it [`ProductDoc`]s of active products
//! (and deletions) as it tails its log, and [`SearchIndex::commit`] records the log
//! position the index reflects, so the feeder resumes from it after a restart. A
//! missing index, or one written in another format, opens empty at position 0 and is
//! rebuilt by the feeder.
//!
//! Queries ([`SearchQuery`]) match every word the shopper typed (English stop words
//! may be missing, unless the query has nothing else), each in the title,
//! brand, description or SKUs (BM25, title above brand above description), with typo
//! tolerance in title and brand (edit distance 1 for words of 4–7 characters, 2 from 8; an exact match
//! always ranks above a fuzzy one), prefix matching of the last word for
//! search-as-you-type, synonyms, filters (category with its descendants, brand, price
//! range, stock, attributes), facet counts that respect every filter but their own,
//! sorts and offset pagination, with highlighted snippets.
//!
//! ```
//! use emporium_search::{ProductDoc, SearchIndex, SearchQuery};
//!
//! let index = SearchIndex::in_memory(Default::default()).unwrap();
//! index.upsert(&ProductDoc {
//!     id: "prod_000000000001".into(),
//!     title: "Apple iPhone 15".into(),
//!     brand: "Apple".into(),
//!     price: 79_900,
//!     currency: "USD".into(),
//!     in_stock: true,
//!     ..ProductDoc::default()
//! }).unwrap();
//! index.commit(7).unwrap();
//! assert_eq!(index.applied_lsn(), 7);
//!
//! let found = index.search(&SearchQuery { text: "iphnoe".into(), ..SearchQuery::default() }).unwrap();
//! assert_eq!(found.hits[0].id, "prod_000000000001");
//! ```

#![warn(missing_docs)]

mod facets;
mod memo;
mod snippets;
mod stored;
mod words;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use parking_lot::Mutex;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter,
    TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

pub use facets::{FacetCounts, PriceBucket, PRICE_BUCKETS};
use memo::NearQuery;
use snippets::Highlighter;
use words::{WordMatch, WordsQuery};

/// The index's on-disk format. An index written in another one is dropped and rebuilt.
pub const SEARCH_FORMAT: &str = "emporium-search/1";

/// The longest query text, in characters.
pub const QUERY_CHARS_MAX: usize = 200;
/// The most words of a query that are matched; later words are ignored.
pub const QUERY_WORDS_MAX: usize = 10;
/// The most hits one page may hold.
pub const PAGE_LIMIT_MAX: usize = 100;
/// How deep pagination may go: offset + limit.
pub const RESULT_WINDOW_MAX: usize = 10_000;
/// Values listed per facet, most frequent first.
pub const FACET_VALUES_MAX: usize = 50;

/// Field boosts: title above brand above description and SKUs.
const TITLE_BOOST: f32 = 3.0;
const BRAND_BOOST: f32 = 2.0;
const DESCRIPTION_BOOST: f32 = 1.0;
const SKU_BOOST: f32 = 1.0;
/// A near (fuzzy) or prefix match of a word scores this much times the field's boost.
/// The automaton of a near match accepts the word itself, so an exact match scores its
/// BM25 on top of that: in the same field, an exact match always outranks a near one.
const NEAR_SCORE: f32 = 1.0;
/// The longest snippet of a title and of a description, in characters.
const TITLE_SNIPPET_CHARS: usize = 150;
const DESCRIPTION_SNIPPET_CHARS: usize = 160;

/// Why a search operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query breaks a limit ([`QUERY_CHARS_MAX`], [`PAGE_LIMIT_MAX`],
    /// [`RESULT_WINDOW_MAX`], a price range that ends before it starts).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Tantivy or the file system failed.
    #[error("search index: {0}")]
    Index(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> SearchError {
        SearchError::Index(e.to_string())
    }
}

impl From<std::io::Error> for SearchError {
    fn from(e: std::io::Error) -> SearchError {
        SearchError::Index(e.to_string())
    }
}

/// What a search operation returns.
pub type Result<T> = std::result::Result<T, SearchError>;

/// What the index knows of one active product.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProductDoc {
    /// `prod_…`.
    pub id: String,
    /// The title, searched with the highest boost.
    pub title: String,
    /// The description, searched with the lowest boost.
    pub description: String,
    /// The brand: searched as text, filtered and counted exactly.
    pub brand: String,
    /// The product's categories and every ancestor of each, so that filtering by a
    /// category finds the products of its descendants.
    pub categories: Vec<String>,
    /// `(name, value)` pairs, filterable exactly.
    pub attributes: Vec<(String, String)>,
    /// The variants' SKUs, searched by their words.
    pub skus: Vec<String>,
    /// The lowest variant price, in minor units.
    pub price: i64,
    /// The price's ISO 4217 code.
    pub currency: String,
    /// Average rating, 0 when unrated.
    pub rating: f64,
    /// Whether any variant has stock available.
    pub in_stock: bool,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// How hits are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Best match first (by creation, newest first, when there is no text).
    #[default]
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Highest rated first.
    Rating,
    /// Newest first.
    Newest,
}

/// Which facets to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FacetRequest {
    /// Count products per brand.
    pub brand: bool,
    /// Count products per category (with its descendants' products).
    pub category: bool,
    /// Count products per price range ([`PRICE_BUCKETS`]).
    pub price: bool,
}

/// A search: text (possibly empty), filters, order, page and facets.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    /// What the shopper typed; empty to browse with the filters.
    pub text: String,
    /// Products in this category or any of its descendants.
    pub category: Option<String>,
    /// Exactly this brand.
    pub brand: Option<String>,
    /// Inclusive, minor units.
    pub price_min: Option<i64>,
    /// Inclusive, minor units.
    pub price_max: Option<i64>,
    /// Whether any variant has stock available.
    pub in_stock: Option<bool>,
    /// Every `(name, value)` must match.
    pub attributes: Vec<(String, String)>,
    /// The order of the hits.
    pub sort: Sort,
    /// The facets to count.
    pub facets: FacetRequest,
    /// Hits to skip (the page's start).
    pub offset: usize,
    /// Hits to return, at most [`PAGE_LIMIT_MAX`].
    pub limit: usize,
}

impl Default for SearchQuery {
    fn default() -> SearchQuery {
        SearchQuery {
            text: String::new(),
            category: None,
            brand: None,
            price_min: None,
            price_max: None,
            in_stock: None,
            attributes: Vec::new(),
            sort: Sort::Relevance,
            facets: FacetRequest::default(),
            offset: 0,
            limit: 20,
        }
    }
}

/// One product found.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    /// The product's id (`prod_…`).
    pub id: String,
    /// The title, searched with the highest boost.
    pub title: String,
    /// The brand: searched as text, filtered and counted exactly.
    pub brand: String,
    /// The lowest variant price, in minor units.
    pub price: i64,
    /// The price's ISO 4217 code.
    pub currency: String,
    /// Average rating, 0 when unrated.
    pub rating: f64,
    /// Whether any variant has stock available.
    pub in_stock: bool,
    /// The relevance score (0 when sorted by a field).
    pub score: f32,
    /// The title with the matched words in `<em>…</em>` (HTML-escaped), when a word of
    /// the query matched it exactly.
    pub title_highlight: Option<String>,
    /// A fragment of the description, likewise.
    pub description_highlight: Option<String>,
}

/// A page of hits, the number of all hits, and the facets asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResults {
    /// The page of hits.
    pub hits: Vec<Hit>,
    /// How many products match in all.
    pub total: usize,
    /// The counts of the facets asked for.
    pub facets: FacetCounts,
}

/// A completion of what the shopper is typing.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// A product title.
    pub text: String,
    /// The product it names.
    pub product_id: String,
}

/// Settings of an index.
#[derive(Clone, Debug, Default)]
pub struct SearchConfig {
    /// Groups of words that mean the same (`["tee", "t-shirt", "tshirt"]`): a query
    /// word in a group matches any word of it.
    pub synonyms: Vec<Vec<String>>,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    title_plain: Field,
    description: Field,
    brand: Field,
    brand_key: Field,
    categories: Field,
    attributes: Field,
    skus: Field,
    price: Field,
    currency: Field,
    rating: Field,
    in_stock: Field,
    created_at: Field,
}

const ANALYZER: &str = "emporium_en";
const PLAIN: &str = "emporium_plain";

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = |analyzer: &str| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED),
        title: builder.add_text_field("title", text(ANALYZER) | STORED),
        title_plain: builder.add_text_field("title_plain", text(PLAIN)),
        description: builder.add_text_field("description", text(ANALYZER) | STORED),
        brand: builder.add_text_field("brand", text(ANALYZER) | STORED),
        brand_key: builder.add_text_field("brand_key", STRING | FAST),
        categories: builder.add_text_field("categories", STRING | FAST),
        attributes: builder.add_text_field("attributes", STRING),
        skus: builder.add_text_field("skus", text(ANALYZER)),
        price: builder.add_i64_field("price", INDEXED | FAST | STORED),
        currency: builder.add_text_field("currency", STORED),
        rating: builder.add_f64_field("rating", FAST | STORED),
        in_stock: builder.add_bool_field("in_stock", INDEXED | FAST | STORED),
        created_at: builder.add_i64_field("created_at", FAST | STORED),
    };
    (builder.build(), fields)
}

/// A word this long (bytes) or longer is not indexed, nor looked for.
const WORD_BYTES_MAX: usize = 40;

/// Words, lower-cased and folded to ASCII, then stemmed by `stemmer` if given.
fn analyzer(stemmer: Option<memo::KeptStemmer>) -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(WORD_BYTES_MAX))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match stemmer {
        Some(stemmer) => builder.filter(stemmer).build(),
        None => builder.build(),
    }
}

/// The tokens `analyzer` makes of `text`.
fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// The key of an attribute pair in the `attributes` field.
fn attribute_key(name: &str, value: &str) -> String {
    format!("{name}\u{1f}{value}")
}

/// A product index.
pub struct SearchIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    /// Each synonym (analysed) → its group's analysed words.
    synonyms: HashMap<String, Vec<String>>,
    /// The query-side analysers, built once (a query clones them: `token_stream`
    /// needs them mutable).
    analyzers: Analyzers,
    applied: std::sync::atomic::AtomicU64,
    created: bool,
    /// The stored fields of hits shown, kept by segment and document.
    hits: stored::HitCache,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("applied_lsn", &self.applied_lsn()).finish()
    }
}

/// Decompressed blocks of stored documents kept per segment (16 kB each, so up to
/// 16 MB): the hits of a page come from all over the store.
const DOC_STORE_CACHE_BLOCKS: usize = 1024;

/// The memory the hits read from the store may keep (about 300 bytes a product: a
/// catalog of 100,000 fits).
const HIT_CACHE_BYTES: usize = 32 << 20;

/// Memory the writer may buffer before it flushes a segment.
const WRITER_BYTES: usize = 32 << 20;

impl SearchIndex {
    /// Opens the index in `dir`, creating it there when it is missing or was written in
    /// another format or schema (then [`SearchIndex::created`] is true and
    /// [`SearchIndex::applied_lsn`] is 0: the caller rebuilds it).
    pub fn open(dir: &Path, config: SearchConfig) -> Result<SearchIndex> {
        let (schema, fields) = schema();
        std::fs::create_dir_all(dir)?;
        let existing = match Index::open_in_dir(dir) {
            Ok(index) => {
                let payload = index.load_metas()?.payload;
                let ours = payload.as_deref().and_then(parse_payload).is_some();
                (ours && index.schema() == schema).then_some(index)
            }
            Err(_) => None,
        };
        let (index, created) = match existing {
            Some(index) => (index, false),
            None => {
                for entry in std::fs::read_dir(dir)? {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                (Index::create_in_dir(dir, schema)?, true)
            }
        };
        SearchIndex::with_index(index, fields, config, created)
    }

    /// An index held in memory only (tests, a standby without a data directory).
    pub fn in_memory(config: SearchConfig) -> Result<SearchIndex> {
        let (schema, fields) = schema();
        SearchIndex::with_index(Index::create_in_ram(schema), fields, config, true)
    }

    fn with_index(
        index: Index,
        fields: Fields,
        config: SearchConfig,
        created: bool,
    ) -> Result<SearchIndex> {
        index.tokenizers().register(ANALYZER, analyzer(Some(Default::default())));
        index.tokenizers().register(PLAIN, analyzer(None));
        let applied = index.load_metas()?.payload.as_deref().and_then(parse_payload).unwrap_or(0);
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .doc_store_cache_num_blocks(DOC_STORE_CACHE_BLOCKS)
            .try_into()?;
        let analyzers = Analyzers {
            plain: analyzer(None),
            stem: analyzer(Some(Default::default())),
            stop: TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(
                    StopWordFilter::new(Language::English).expect("tantivy has English stop words"),
                )
                .build(),
        };
        let mut stem = analyzers.stem.clone();
        let mut synonyms = HashMap::new();
        for group in &config.synonyms {
            let words: Vec<String> = group.iter().flat_map(|w| tokens(&mut stem, w)).collect();
            for word in &words {
                synonyms.insert(word.clone(), words.clone());
            }
        }
        Ok(SearchIndex {
            reader,
            writer: Mutex::new(writer),
            fields,
            synonyms,
            analyzers,
            applied: applied.into(),
            created,
            hits: stored::HitCache::new(HIT_CACHE_BYTES),
        })
    }

    /// Whether [`SearchIndex::open`] made a new, empty index.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The log position of the last commit (0 for a new index).
    pub fn applied_lsn(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Products searchable now.
    pub fn doc_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Segments searchable now: every query walks each one's term dictionary.
    pub fn segment_count(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// Adds `doc`, replacing the product's previous document. Visible after the next
    /// [`SearchIndex::commit`].
    pub fn upsert(&self, doc: &ProductDoc) -> Result<()> {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.id, &doc.id);
        d.add_text(f.title, &doc.title);
        d.add_text(f.title_plain, &doc.title);
        d.add_text(f.description, &doc.description);
        d.add_text(f.brand, &doc.brand);
        d.add_text(f.brand_key, &doc.brand);
        for category in &doc.categories {
            d.add_text(f.categories, category);
        }
        for (name, value) in &doc.attributes {
            d.add_text(f.attributes, attribute_key(name, value));
        }
        for sku in &doc.skus {
            d.add_text(f.skus, sku);
        }
        d.add_i64(f.price, doc.price);
        d.add_text(f.currency, &doc.currency);
        d.add_f64(f.rating, doc.rating);
        d.add_bool(f.in_stock, doc.in_stock);
        d.add_i64(f.created_at, doc.created_at);
        let writer = self.writer.lock();
        writer.delete_term(Term::from_field_text(f.id, &doc.id));
        writer.add_document(d)?;
        Ok(())
    }

    /// Removes a product (no longer active, or deleted).
    pub fn delete(&self, id: &str) -> Result<()> {
        self.writer.lock().delete_term(Term::from_field_text(self.fields.id, id));
        Ok(())
    }

    /// Removes every product (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer.lock().delete_all_documents()?;
        Ok(())
    }

    /// Makes every change so far durable and searchable, recording that the index
    /// reflects the log up to `lsn`.
    pub fn commit(&self, lsn: u64) -> Result<()> {
        let mut writer = self.writer.lock();
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&format!("{SEARCH_FORMAT} lsn={lsn}"));
        prepared.commit()?;
        drop(writer);
        self.reload()?;
        self.applied.store(lsn, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Merges the segments written since the largest one into one when there are more
    /// than `segments_max`: each commit writes a segment, and every query walks every
    /// segment's term dictionary. Whether it merged. Blocks until the merge is done
    /// (documents and commits go on meanwhile); a merge the background policy already
    /// runs on one of them makes it a no-op.
    pub fn compact(&self, segments_max: usize) -> Result<bool> {
        // The segments as they are now: the writer's own merges since the last commit
        // are not in the reader's view until it reloads.
        self.reload()?;
        let searcher = self.reader.searcher();
        let mut segments: Vec<(u32, tantivy::index::SegmentId)> =
            searcher.segment_readers().iter().map(|r| (r.num_docs(), r.segment_id())).collect();
        if segments.len() <= segments_max.max(1) {
            return Ok(false);
        }
        segments.sort_by_key(|s| std::cmp::Reverse(s.0));
        let newer: Vec<tantivy::index::SegmentId> =
            segments[1..].iter().map(|(_, id)| *id).collect();
        let merging = self.writer.lock().merge(&newer);
        if merging.wait().is_err() {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Points searches at the index as last committed, and lets go of the kept hits
    /// of the segments no longer in it.
    fn reload(&self) -> Result<()> {
        self.reader.reload()?;
        let live: Vec<tantivy::index::SegmentId> =
            self.reader.searcher().segment_readers().iter().map(|r| r.segment_id()).collect();
        self.hits.retain(&live);
        Ok(())
    }

    /// Runs `query`.
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults> {
        check(query)?;
        let searcher = self.reader.searcher();
        let words = self.words(&query.text);
        let text = self.text_query(&words);
        let filters = self.filters(query, None);
        let main = combine(text.as_ref().map(|q| q.box_clone()), filters);
        let window = query.offset + query.limit;
        // Facets whose own filter is not set count the same documents as the page:
        // they are counted in the same pass. The others get a pass each, below.
        let (free, bound): (Vec<Facet>, Vec<Facet>) =
            asked_facets(query).into_iter().partition(|f| !filtered_by(query, *f));
        let counter = facets::FacetCollector { facets: free };
        let (total, page, mut counted): (usize, Vec<(f32, DocAddress)>, _) = if window == 0 {
            let (total, counted) = searcher.search(&main, &(Count, counter))?;
            (total, Vec::new(), counted)
        } else {
            let top = || TopDocs::with_limit(query.limit).and_offset(query.offset);
            let sort = match (query.sort, text.is_some()) {
                (Sort::Relevance, false) => Sort::Newest,
                (sort, _) => sort,
            };
            let by = |field: &str, order: Order| -> Result<(usize, Vec<(f32, DocAddress)>, _)> {
                let collector = top().order_by_fast_field::<i64>(field.to_string(), order);
                let (total, docs, counted) =
                    searcher.search(&main, &(Count, collector, counter.clone()))?;
                Ok((total, unscored(docs), counted))
            };
            match sort {
                Sort::Relevance => searcher.search(&main, &(Count, top(), counter.clone()))?,
                Sort::PriceAsc => by("price", Order::Asc)?,
                Sort::PriceDesc => by("price", Order::Desc)?,
                Sort::Newest => by("created_at", Order::Desc)?,
                Sort::Rating => {
                    let collector = top().order_by_fast_field::<f64>("rating", Order::Desc);
                    let (total, docs, counted) =
                        searcher.search(&main, &(Count, collector, counter.clone()))?;
                    (total, unscored(docs), counted)
                }
            }
        };
        for facet in bound {
            let q = combine(text.as_ref().map(|q| q.box_clone()), self.filters(query, Some(facet)));
            counted.extend(searcher.search(&q, &facets::FacetCollector { facets: vec![facet] })?);
        }
        let mut facets = FacetCounts::default();
        for (facet, fruit) in counted {
            facets.merge(facet, fruit);
        }
        let mut highlights = self.highlighter(&searcher, &words)?;
        let mut hits = Vec::with_capacity(page.len());
        for (score, address) in page {
            let doc = self.hits.get(&searcher, address)?;
            hits.push(doc.to_hit(score, highlights.as_mut()));
        }
        Ok(SearchResults { hits, total, facets })
    }

    /// Up to `limit` product titles that complete `prefix` (its last word as a prefix,
    /// the others typo-tolerant), best first.
    pub fn suggest(&self, prefix: &str, limit: usize) -> Result<Vec<Suggestion>> {
        if prefix.chars().count() > QUERY_CHARS_MAX {
            return Err(SearchError::InvalidQuery(format!(
                "q must be at most {QUERY_CHARS_MAX} characters"
            )));
        }
        let limit = limit.min(PAGE_LIMIT_MAX);
        let words = self.words(prefix);
        let Some(text) = self.text_query(&words) else {
            return Ok(Vec::new());
        };
        let searcher = self.reader.searcher();
        let query = combine(Some(text), Vec::new());
        let mut out: Vec<Suggestion> = Vec::new();
        for (_, address) in searcher.search(&query, &TopDocs::with_limit(limit * 2))? {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = stored_text(&doc, self.fields.title);
            if out.len() < limit && !out.iter().any(|s| s.text == text) {
                out.push(Suggestion { text, product_id: stored_text(&doc, self.fields.id) });
            }
        }
        Ok(out)
    }

    /// The words of `text`: each word's plain form (lower-cased, folded), stem, and
    /// whether it is a stop word. The last word may be a prefix, unless the text ends
    /// in a separator (the shopper finished it).
    fn words(&self, text: &str) -> Vec<Word> {
        let Analyzers { mut plain, mut stem, mut stop } = self.analyzers.clone();
        let mut words: Vec<Word> = tokens(&mut plain, text)
            .into_iter()
            .take(QUERY_WORDS_MAX)
            .map(|plain_word| {
                let stem_word =
                    tokens(&mut stem, &plain_word).pop().unwrap_or_else(|| plain_word.clone());
                let stop = tokens(&mut stop, &plain_word).is_empty();
                Word { plain: plain_word, stem: stem_word, prefix: false, stop }
            })
            .collect();
        let finished = text.chars().last().is_none_or(|c| !c.is_alphanumeric());
        if let (false, Some(last)) = (finished, words.last_mut()) {
            last.prefix = true;
        }
        words
    }

    /// Every word must match, in some field, exactly, nearly or (the last) as a prefix.
    fn text_query(&self, words: &[Word]) -> Option<Box<dyn Query>> {
        if words.is_empty() {
            return None;
        }
        Some(Box::new(WordsQuery::new(self.word_matches(words))))
    }

    /// The ways each word may match.
    fn word_matches(&self, words: &[Word]) -> Vec<WordMatch> {
        let f = &self.fields;
        let fields = [
            (f.title, TITLE_BOOST),
            (f.brand, BRAND_BOOST),
            (f.description, DESCRIPTION_BOOST),
            (f.skus, SKU_BOOST),
        ];
        // Stop words ("for", "and") need not match, unless there is nothing else.
        let only_stop_words = words.iter().all(|w| w.stop);
        let mut matches = Vec::with_capacity(words.len());
        for word in words {
            let mut exact = Vec::new();
            let mut near = Vec::new();
            let same =
                self.synonyms.get(&word.stem).cloned().unwrap_or_else(|| vec![word.stem.clone()]);
            for stem in &same {
                for (field, boost) in fields {
                    exact.push((Term::from_field_text(field, stem), boost));
                    // Typos are forgiven in the title and brand only: a near match in
                    // a description is mostly noise, and each costs an automaton walk.
                    let near_field = field == f.title || field == f.brand;
                    if let (true, Some(distance)) = (near_field, typo_distance(&word.plain)) {
                        near.push((
                            NearQuery::new(field, stem, distance, false),
                            NEAR_SCORE * boost,
                        ));
                    }
                }
            }
            if word.prefix {
                let prefix = NearQuery::new(f.title_plain, &word.plain, 0, true);
                near.push((prefix, NEAR_SCORE * TITLE_BOOST));
            }
            let required = !word.stop || only_stop_words;
            matches.push(WordMatch { required, exact, near });
        }
        matches
    }

    /// The filters of `query`, except the one a facet being counted is about.
    fn filters(&self, query: &SearchQuery, without: Option<Facet>) -> Vec<Box<dyn Query>> {
        let f = &self.fields;
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic))
        };
        let mut out: Vec<Box<dyn Query>> = Vec::new();
        if let (Some(category), false) = (&query.category, without == Some(Facet::Category)) {
            out.push(term(f.categories, category));
        }
        if let (Some(brand), false) = (&query.brand, without == Some(Facet::Brand)) {
            out.push(term(f.brand_key, brand));
        }
        if without != Some(Facet::Price) && (query.price_min.is_some() || query.price_max.is_some())
        {
            let bound = |value: Option<i64>| match value {
                Some(v) => Bound::Included(Term::from_field_i64(f.price, v)),
                None => Bound::Unbounded,
            };
            out.push(Box::new(RangeQuery::new(bound(query.price_min), bound(query.price_max))));
        }
        if let Some(in_stock) = query.in_stock {
            out.push(Box::new(TermQuery::new(
                Term::from_field_bool(f.in_stock, in_stock),
                IndexRecordOption::Basic,
            )));
        }
        for (name, value) in &query.attributes {
            out.push(term(f.attributes, &attribute_key(name, value)));
        }
        out
    }

    /// Snippet makers for the title and the description, marking the words' stems.
    fn highlighter(
        &self,
        searcher: &tantivy::Searcher,
        words: &[Word],
    ) -> Result<Option<(Highlighter, Highlighter)>> {
        if words.is_empty() {
            return Ok(None);
        }
        // Only the words that begin as a stem does can stem to it: the others are not
        // stemmed (most of a description's words).
        let initials: Vec<char> = words.iter().filter_map(|w| w.stem.chars().next()).collect();
        let analyzer = analyzer(Some(memo::KeptStemmer::only_initials(initials.clone())));
        let highlighter = |field: Field, chars: usize| -> Result<Highlighter> {
            // Rarer words weigh more in choosing the fragment, as tantivy scores them.
            let mut stems = Vec::with_capacity(words.len());
            for word in words {
                let doc_freq = searcher.doc_freq(&Term::from_field_text(field, &word.stem))?;
                if doc_freq > 0 {
                    stems.push((word.stem.clone(), 1.0 / (1.0 + doc_freq as f32)));
                }
            }
            Ok(Highlighter::new(analyzer.clone(), initials.clone(), stems, chars))
        };
        let f = &self.fields;
        Ok(Some((
            highlighter(f.title, TITLE_SNIPPET_CHARS)?,
            highlighter(f.description, DESCRIPTION_SNIPPET_CHARS)?,
        )))
    }
}

/// A facet, as a filter to leave out while counting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Facet {
    Brand,
    Category,
    Price,
}

/// Analysers of query text.
#[derive(Clone)]
struct Analyzers {
    plain: TextAnalyzer,
    stem: TextAnalyzer,
    /// Drops English stop words: a word it drops is one.
    stop: TextAnalyzer,
}

struct Word {
    plain: String,
    stem: String,
    prefix: bool,
    /// An English stop word.
    stop: bool,
}

/// Hits ordered by a field: no score.
fn unscored<T>(docs: Vec<(T, DocAddress)>) -> Vec<(f32, DocAddress)> {
    docs.into_iter().map(|(_, d)| (0.0, d)).collect()
}

/// The facets `query` asks for.
fn asked_facets(query: &SearchQuery) -> Vec<Facet> {
    let asked = [
        (query.facets.brand, Facet::Brand),
        (query.facets.category, Facet::Category),
        (query.facets.price, Facet::Price),
    ];
    asked.into_iter().filter(|(asked, _)| *asked).map(|(_, facet)| facet).collect()
}

/// Whether `query` filters on what `facet` counts.
fn filtered_by(query: &SearchQuery, facet: Facet) -> bool {
    match facet {
        Facet::Brand => query.brand.is_some(),
        Facet::Category => query.category.is_some(),
        Facet::Price => query.price_min.is_some() || query.price_max.is_some(),
    }
}

/// The edit distance a word of this length may be off by.
fn typo_distance(word: &str) -> Option<u8> {
    match word.chars().count() {
        0..=3 => None,
        4..=7 => Some(1),
        _ => Some(2),
    }
}

/// Text AND filters (filters add no score); every product when both are empty.
fn combine(text: Option<Box<dyn Query>>, filters: Vec<Box<dyn Query>>) -> BooleanQuery {
    let mut clauses: Vec<(Occur, Box<dyn Query>)> =
        vec![(Occur::Must, text.unwrap_or_else(|| Box::new(AllQuery)))];
    for filter in filters {
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))));
    }
    BooleanQuery::new(clauses)
}

fn check(query: &SearchQuery) -> Result<()> {
    let invalid = |m: String| Err(SearchError::InvalidQuery(m));
    if query.text.chars().count() > QUERY_CHARS_MAX {
        return invalid(format!("q must be at most {QUERY_CHARS_MAX} characters"));
    }
    if query.limit > PAGE_LIMIT_MAX {
        return invalid(format!("limit must be at most {PAGE_LIMIT_MAX}"));
    }
    if query.offset.saturating_add(query.limit) > RESULT_WINDOW_MAX {
        return invalid(format!("results past the first {RESULT_WINDOW_MAX} are not paged"));
    }
    if let (Some(min), Some(max)) = (query.price_min, query.price_max) {
        if min > max {
            return invalid("price_min must not be above price_max".into());
        }
    }
    Ok(())
}

fn stored_text(doc: &TantivyDocument, field: Field) -> String {
    doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn parse_payload(payload: &str) -> Option<u64> {
    payload.strip_prefix(SEARCH_FORMAT)?.strip_prefix(" lsn=")?.parse().ok()
}

#[cfg(test)]
mod tests;
