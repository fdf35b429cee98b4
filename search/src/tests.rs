//! Relevance as data, filters and facets against a brute-force scan, and the commit
//! position across a reopen.

use proptest::prelude::*;
use tantivy::snippet::SnippetGenerator;

use super::*;

fn doc(n: u64, title: &str, brand: &str, price: i64) -> ProductDoc {
    ProductDoc {
        id: format!("prod_{n:012}"),
        title: title.into(),
        brand: brand.into(),
        price,
        currency: "USD".into(),
        in_stock: true,
        created_at: n as i64,
        ..ProductDoc::default()
    }
}

fn catalog() -> SearchIndex {
    let config =
        SearchConfig { synonyms: vec![vec!["tee".into(), "t-shirt".into(), "tshirt".into()]] };
    let index = SearchIndex::in_memory(config).expect("index");
    let mut docs = vec![
        doc(1, "Apple iPhone 15 Pro", "Apple", 99_900),
        doc(2, "Phone case for iPhone", "Caseco", 1_999),
        doc(3, "Running shoes", "Swift", 8_900),
        doc(4, "Trail runner shoe", "Swift", 9_900),
        doc(5, "Organic cotton T-Shirt", "Basics", 1_500),
        doc(6, "Headphones wireless", "Sonic", 19_900),
        doc(7, "Wireless charger for phones", "Apple", 3_900),
        doc(8, "Mountain bicycle", "Ridge", 59_900),
        doc(9, "Keyboard mechanical", "Clack", 12_900),
        doc(10, "Sonic toothbrush", "Dentix", 4_900),
    ];
    docs[2].description = "Light shoes for long runs on the road.".into();
    docs[5].description = "Noise cancelling, 30 hours of battery.".into();
    docs[7].skus = vec!["BIKE-MTN-29".into()];
    for d in &docs {
        index.upsert(d).expect("upsert");
    }
    index.commit(1).expect("commit");
    index
}

fn ids(index: &SearchIndex, query: SearchQuery) -> Vec<u64> {
    let found = index.search(&query).expect("search");
    found.hits.iter().map(|h| h.id["prod_".len()..].parse().expect("number")).collect()
}

fn text(q: &str) -> SearchQuery {
    SearchQuery { text: q.into(), ..SearchQuery::default() }
}

#[test]
fn relevance_cases() {
    let index = catalog();
    // (query, the products expected first, in this order)
    let cases: &[(&str, &[u64])] = &[
        ("iphone", &[1, 2]),   // title match; both have it
        ("iphnoe ", &[1, 2]),  // a transposition in a finished word
        ("iphone case", &[2]), // every word must match
        ("runs", &[3]),        // stemming: description "runs" / title "running"
        ("running", &[3]),     // "running" stems to "run", not "runner"
        ("runer ", &[4]),      // one edit from "runner"
        ("shoes", &[3, 4]),    // plural and singular share a stem
        ("mountain bicycle", &[8]),
        ("montain bicycel ", &[8]), // a typo in each word
        ("keyb", &[9]),             // prefix of the word being typed
        ("tee", &[5]),              // synonym of t-shirt
        ("apple", &[1, 7]),         // brand matches rank below title matches
        ("bike mtn", &[8]),         // SKU words
        ("headphone wireless ", &[6]),
        ("zzzz", &[]),
        ("\"(iphone)\": AND OR *", &[1, 2]), // query syntax is just text; stop words optional
        ("case for iphone ", &[2]),
        ("for", &[2, 7]), // only stop words: they must match
    ];
    for (query, expected) in cases {
        let got = ids(&index, text(query));
        assert!(
            got.len() >= expected.len() && got[..expected.len()] == **expected,
            "{query:?}: expected {expected:?} first, got {got:?}"
        );
        if expected.is_empty() {
            assert!(got.is_empty(), "{query:?}: expected nothing, got {got:?}");
        }
    }
}

/// The words query finds the documents, with the scores, that a boolean query of a
/// union per word finds: over two segments, with a deletion, with and without scores.
#[test]
fn the_words_query_finds_and_scores_what_a_union_per_word_does() {
    let index = catalog();
    index.upsert(&doc(11, "iPhone charger cable for phones", "Apple", 1_900)).expect("upsert");
    index.upsert(&doc(12, "Running socks, shoes not included", "Swift", 900)).expect("upsert");
    index.delete("prod_000000000004").expect("delete");
    index.commit(2).expect("commit");
    let searcher = index.reader.searcher();
    assert!(searcher.segment_readers().len() >= 2, "two segments");
    let queries = [
        "iphone",
        "iphnoe ",
        "iphone case",
        "runs",
        "runer ",
        "shoes",
        "running shoes ",
        "montain bicycel ",
        "keyb",
        "tee",
        "apple",
        "apple pho",
        "bike mtn",
        "case for iphone ",
        "for",
        "for the ",
        "wireless pho",
        "zzzz",
    ];
    let sorted = |mut hits: Vec<(tantivy::Score, DocAddress)>| {
        hits.sort_by_key(|(_, address)| *address);
        hits
    };
    for q in queries {
        let matches = index.word_matches(&index.words(q));
        let words = words::WordsQuery::new(matches.clone());
        let boolean = words::as_boolean(&matches);
        let top = TopDocs::with_limit(100);
        let found = sorted(searcher.search(&words, &top).expect("words"));
        let expected = sorted(searcher.search(&boolean, &top).expect("boolean"));
        let addresses =
            |hits: &[(tantivy::Score, DocAddress)]| hits.iter().map(|h| h.1).collect::<Vec<_>>();
        assert_eq!(addresses(&found), addresses(&expected), "documents of {q:?}");
        for ((score, address), (expected, _)) in found.iter().zip(&expected) {
            assert!(
                (score - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "{q:?}: {address:?} scored {score}, the boolean query {expected}"
            );
        }
        let count = searcher.search(&words, &Count).expect("count");
        assert_eq!(count, searcher.search(&boolean, &Count).expect("count"), "count of {q:?}");
        assert_eq!(count, expected.len(), "every document of {q:?} is within the top 100");
        // Unscored, as under a sort by a field.
        let by_price = TopDocs::with_limit(100).order_by_fast_field::<i64>("price", Order::Asc);
        assert_eq!(
            searcher.search(&words, &by_price).expect("words"),
            searcher.search(&boolean, &by_price).expect("boolean"),
            "by price, {q:?}"
        );
    }
}

#[test]
fn an_exact_match_outranks_a_near_one() {
    let index = SearchIndex::in_memory(SearchConfig::default()).expect("index");
    index.upsert(&doc(1, "Cotten box", "", 100)).expect("upsert");
    index.upsert(&doc(2, "Cotton shirt", "", 100)).expect("upsert");
    index.commit(1).expect("commit");
    assert_eq!(ids(&index, text("cotton ")), vec![2, 1], "cotten is one edit from cotton");
}

#[test]
fn highlights_mark_the_matched_words() {
    let index = catalog();
    let found = index.search(&text("wireless")).expect("search");
    let hit = found.hits.iter().find(|h| h.id.ends_with("06")).expect("headphones");
    assert_eq!(hit.title_highlight.as_deref(), Some("Headphones <em>wireless</em>"));
    assert_eq!(hit.description_highlight, None);
}

/// The snippets are tantivy's: the same fragments, marks and escaping as its
/// `SnippetGenerator` over the index's analyser gives, for words in many places.
#[test]
fn highlights_are_tantivys_snippets() {
    let index = catalog();
    let mut odd = doc(20, "Tom & Jerry's <b>\"running\"</b> shoes", "Café Élan", 2_000);
    odd.description = format!(
        "{} The runner's shoes run & run: <script>alert('x')</script> ÉLAN naïve skies. {}",
        "Filler words before. ".repeat(12),
        "And after, running again ".repeat(12),
    );
    // All ASCII: the highlighter's own word splitting, beside the analyser's for the
    // text above (a word of 40 bytes or more is no word, as the analyser drops it).
    let mut plain = doc(21, "RUNNING Shoes, running-shoes & Runs", "Elan", 2_500);
    plain.description = format!(
        "{} Runs, RUNNING shoes2 shoes; {} runner's 'skies' (run) {}",
        "Words before the marks, and more words. ".repeat(3),
        "runningshoesrunningshoesrunningshoesrunningshoes",
        "then quiet words again, and again. ".repeat(6),
    );
    index.upsert(&odd).expect("upsert");
    index.upsert(&plain).expect("upsert");
    index.commit(3).expect("commit");
    let searcher = index.reader.searcher();
    let f = &index.fields;
    let mut compared = 0;
    for q in [
        "running shoes",
        "shoes",
        "elan",
        "run skies",
        "tom jerry ",
        "script alert",
        "cafe",
        "runs running",
        "again before",
    ] {
        let words = index.words(q);
        let terms: Vec<(Occur, Box<dyn Query>)> = words
            .iter()
            .flat_map(|w| [(f.title, &w.stem), (f.description, &w.stem)])
            .map(|(field, stem)| -> (Occur, Box<dyn Query>) {
                let term = Term::from_field_text(field, stem);
                (Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
            })
            .collect();
        let query = BooleanQuery::new(terms);
        let expected = |field: Field, chars: usize, text: &str| {
            let mut generator = SnippetGenerator::create(&searcher, &query, field).expect("gen");
            generator.set_max_num_chars(chars);
            let mut snippet = generator.snippet(text);
            snippet.set_snippet_prefix_postfix("<em>", "</em>");
            (!snippet.highlighted().is_empty()).then(|| snippet.to_html())
        };
        let found = index.search(&text(q)).expect("search");
        for product in [&odd, &plain] {
            let Some(hit) = found.hits.iter().find(|h| h.id == product.id) else {
                assert_ne!(product.id, odd.id, "the odd product is found for {q:?}");
                continue;
            };
            compared += 1;
            assert_eq!(
                hit.title_highlight,
                expected(f.title, TITLE_SNIPPET_CHARS, &product.title),
                "title of {} for {q:?}",
                product.id
            );
            assert_eq!(
                hit.description_highlight,
                expected(f.description, DESCRIPTION_SNIPPET_CHARS, &product.description),
                "description of {} for {q:?}",
                product.id
            );
        }
        let hit = found.hits.iter().find(|h| h.id == odd.id).expect("the odd product is found");
        if q == "running shoes" {
            let title = hit.title_highlight.as_deref().unwrap_or_default();
            assert!(title.contains("&amp;") && title.contains("<em>shoes</em>"), "{title}");
            assert!(hit.description_highlight.is_some());
        }
    }
    assert!(compared >= 14, "both products are compared for most queries ({compared})");
}

#[test]
fn sorts_and_pages() {
    let index = catalog();
    let by = |sort| ids(&index, SearchQuery { sort, limit: 3, ..SearchQuery::default() });
    assert_eq!(by(Sort::PriceAsc), vec![5, 2, 7]);
    assert_eq!(by(Sort::PriceDesc), vec![1, 8, 6]);
    assert_eq!(by(Sort::Newest), vec![10, 9, 8]);
    let page = |offset| {
        ids(
            &index,
            SearchQuery { offset, limit: 4, sort: Sort::PriceAsc, ..SearchQuery::default() },
        )
    };
    let all: Vec<u64> = [page(0), page(4), page(8)].concat();
    assert_eq!(all, vec![5, 2, 7, 10, 3, 4, 9, 6, 8, 1]);
    let total =
        index.search(&SearchQuery { limit: 1, ..SearchQuery::default() }).expect("search").total;
    assert_eq!(total, 10);
}

#[test]
fn limits_are_refused_not_served() {
    let index = catalog();
    for bad in [
        SearchQuery { text: "x".repeat(QUERY_CHARS_MAX + 1), ..SearchQuery::default() },
        SearchQuery { limit: PAGE_LIMIT_MAX + 1, ..SearchQuery::default() },
        SearchQuery { offset: RESULT_WINDOW_MAX, limit: 1, ..SearchQuery::default() },
        SearchQuery { price_min: Some(10), price_max: Some(9), ..SearchQuery::default() },
    ] {
        assert!(matches!(index.search(&bad), Err(SearchError::InvalidQuery(_))), "{bad:?}");
    }
    // Long words, odd characters and nothing at all are just text.
    for odd in ["", "   ", "ünïcödé 日本語", &"a".repeat(QUERY_CHARS_MAX), "a:b (c) \"d\" -e +f ~g"]
    {
        index.search(&text(odd)).expect(odd);
        index.suggest(odd, 5).expect(odd);
    }
}

#[test]
fn suggestions_complete_the_last_word() {
    let index = catalog();
    let got = index.suggest("wirel", 5).expect("suggest");
    let titles: Vec<&str> = got.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(
        titles.contains(&"Headphones wireless") && titles.contains(&"Wireless charger for phones")
    );
}

#[test]
fn an_update_replaces_and_a_delete_removes() {
    let index = catalog();
    let mut moved = doc(3, "Running shoes", "Swift", 8_900);
    moved.in_stock = false;
    index.upsert(&moved).expect("upsert");
    index.delete("prod_000000000004").expect("delete");
    index.commit(2).expect("commit");
    assert_eq!(ids(&index, SearchQuery { in_stock: Some(false), ..text("shoes") }), vec![3]);
    assert_eq!(ids(&index, text("shoe")), vec![3]);
    assert_eq!(index.doc_count(), 9);
}

#[test]
fn the_commit_position_survives_a_reopen_and_another_format_is_rebuilt() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let index = SearchIndex::open(dir.path(), SearchConfig::default()).expect("open");
        assert!(index.created());
        index.upsert(&doc(1, "Lamp", "Glow", 100)).expect("upsert");
        index.commit(42).expect("commit");
    }
    let index = SearchIndex::open(dir.path(), SearchConfig::default()).expect("reopen");
    assert!(!index.created());
    assert_eq!(index.applied_lsn(), 42);
    assert_eq!(index.doc_count(), 1);
    drop(index);
    // An index of another format: dropped and made anew, empty, at position 0.
    let meta = dir.path().join("meta.json");
    let text = std::fs::read_to_string(&meta).expect("meta");
    std::fs::write(&meta, text.replace(SEARCH_FORMAT, "emporium-search/0")).expect("write");
    let index = SearchIndex::open(dir.path(), SearchConfig::default()).expect("reopen");
    assert!(index.created());
    assert_eq!((index.applied_lsn(), index.doc_count()), (0, 0));
}

/// Titles are drawn from words far apart (no two within two edits, none a prefix or
/// stem of another), so the brute-force match is exact word equality.
const WORDS: [&str; 6] = ["anchor", "bicycle", "candle", "dolphin", "guitar", "harbor"];
const BRANDS: [&str; 3] = ["Acme", "Globex", "Initech"];
const CATEGORIES: [&str; 3] = ["cat_a", "cat_b", "cat_c"];

#[derive(Clone, Debug)]
struct Filters {
    word: Option<usize>,
    brand: Option<usize>,
    category: Option<usize>,
    price: (Option<i64>, Option<i64>),
    in_stock: Option<bool>,
}

fn product() -> impl Strategy<Value = (Vec<usize>, usize, Vec<usize>, i64, bool)> {
    (
        prop::collection::vec(0..WORDS.len(), 1..3),
        0..BRANDS.len(),
        prop::collection::vec(0..CATEGORIES.len(), 0..3),
        0i64..120_000,
        any::<bool>(),
    )
}

fn filters() -> impl Strategy<Value = Filters> {
    (
        prop::option::of(0..WORDS.len()),
        prop::option::of(0..BRANDS.len()),
        prop::option::of(0..CATEGORIES.len()),
        (prop::option::of(0i64..120_000), prop::option::of(0i64..120_000)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(word, brand, category, (a, b), in_stock)| {
            let price = match (a, b) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            Filters { word, brand, category, price, in_stock }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn hits_and_facets_equal_a_brute_force_scan(
        products in prop::collection::vec(product(), 0..40),
        filters in prop::collection::vec(filters(), 1..6),
    ) {
        let index = SearchIndex::in_memory(SearchConfig::default()).expect("index");
        let docs: Vec<ProductDoc> = products.iter().enumerate().map(|(n, (words, brand, cats, price, in_stock))| {
            let mut d = doc(n as u64, &words.iter().map(|w| WORDS[*w]).collect::<Vec<_>>().join(" "), BRANDS[*brand], *price);
            d.categories = cats.iter().map(|c| CATEGORIES[*c].to_string()).collect();
            d.categories.dedup();
            d.in_stock = *in_stock;
            d
        }).collect();
        for d in &docs {
            index.upsert(d).expect("upsert");
        }
        index.commit(1).expect("commit");
        for f in filters {
            let query = SearchQuery {
                // A trailing space: the word is finished, no prefix matching.
                text: f.word.map(|w| format!("{} ", WORDS[w])).unwrap_or_default(),
                brand: f.brand.map(|b| BRANDS[b].to_string()),
                category: f.category.map(|c| CATEGORIES[c].to_string()),
                price_min: f.price.0,
                price_max: f.price.1,
                in_stock: f.in_stock,
                facets: FacetRequest { brand: true, category: true, price: true },
                limit: 100,
                ..SearchQuery::default()
            };
            let found = index.search(&query).expect("search");
            // Brute force, with one filter left out per facet.
            let matches = |d: &ProductDoc, skip: Option<Facet>| {
                f.word.is_none_or(|w| d.title.split(' ').any(|t| t == WORDS[w]))
                    && (skip == Some(Facet::Brand) || f.brand.is_none_or(|b| d.brand == BRANDS[b]))
                    && (skip == Some(Facet::Category) || f.category.is_none_or(|c| d.categories.iter().any(|x| x == CATEGORIES[c])))
                    && (skip == Some(Facet::Price) || (f.price.0.is_none_or(|m| d.price >= m) && f.price.1.is_none_or(|m| d.price <= m)))
                    && f.in_stock.is_none_or(|s| d.in_stock == s)
            };
            let mut expected: Vec<&str> = docs.iter().filter(|d| matches(d, None)).map(|d| d.id.as_str()).collect();
            let mut got: Vec<&str> = found.hits.iter().map(|h| h.id.as_str()).collect();
            expected.sort_unstable();
            got.sort_unstable();
            prop_assert_eq!(found.total, expected.len());
            prop_assert_eq!(got, expected);
            let count = |skip: Facet, key: &dyn Fn(&ProductDoc) -> Vec<String>| {
                let mut counts: HashMap<String, u64> = HashMap::new();
                for d in docs.iter().filter(|d| matches(d, Some(skip))) {
                    for k in key(d) {
                        *counts.entry(k).or_default() += 1;
                    }
                }
                counts
            };
            let as_map = |v: &[(String, u64)]| v.iter().cloned().collect::<HashMap<_, _>>();
            prop_assert_eq!(as_map(&found.facets.brand), count(Facet::Brand, &|d| vec![d.brand.clone()]));
            prop_assert_eq!(as_map(&found.facets.category), count(Facet::Category, &|d| d.categories.clone()));
            let prices: HashMap<String, u64> = found.facets.price.iter().map(|b| (b.from.to_string(), b.count)).collect();
            let expected_prices = count(Facet::Price, &|d| vec![PRICE_BUCKETS[facets_bucket(d.price)].to_string()]);
            prop_assert_eq!(prices, expected_prices);
        }
    }
}

fn facets_bucket(price: i64) -> usize {
    PRICE_BUCKETS.iter().rposition(|from| *from <= price).unwrap_or(0)
}

#[test]
fn compaction_merges_the_small_segments_and_keeps_every_document() {
    let index = SearchIndex::in_memory(SearchConfig::default()).expect("index");
    for n in 0..12 {
        index.upsert(&doc(n, &format!("Lantern {n}"), "Glow", 100 + n as i64)).expect("upsert");
        index.commit(n + 1).expect("commit");
    }
    let before = ids(&index, SearchQuery { sort: Sort::PriceAsc, ..text("lantern ") });
    assert!(!index.compact(16).expect("compact"), "12 segments are within 16");
    // Tantivy's own merge policy may be merging some of them in the background, which
    // makes a compaction that overlaps it a no-op: try until one takes.
    let segments = || index.reader.searcher().segment_readers().len();
    for _ in 0..100 {
        if segments() <= 4 || index.compact(4).expect("compact") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(segments() <= 4, "{} segments after compaction", segments());
    assert_eq!(ids(&index, SearchQuery { sort: Sort::PriceAsc, ..text("lantern ") }), before);
    assert_eq!((index.doc_count(), index.applied_lsn()), (12, 12));
}

/// A hit shows what the store holds, whether read from it or kept from an earlier
/// read; the kept hits of segments merged away are let go, and none are kept past
/// the cache's bound.
#[test]
fn hits_kept_in_memory_are_the_stored_ones_and_go_with_their_segments() {
    let index = SearchIndex::in_memory(SearchConfig::default()).expect("index");
    let mut docs = Vec::new();
    for n in 1..=6u64 {
        let mut product = doc(n, &format!("Linen shirt {n}"), "Acme & Sons", 100 * n as i64);
        product.description = format!("A \"shirt\" of linen, number {n}");
        product.currency = if n % 2 == 0 { "EUR".into() } else { "USD".into() };
        product.rating = n as f64 / 2.0;
        product.in_stock = n % 3 != 0;
        index.upsert(&product).expect("upsert");
        // A commit each: six segments.
        index.commit(n).expect("commit");
        docs.push(product);
    }
    assert_eq!(index.segment_count(), 6);
    let query = SearchQuery { sort: Sort::PriceAsc, ..text("shirt") };
    let shown = |found: &SearchResults| {
        found
            .hits
            .iter()
            .map(|h| (h.id.clone(), h.title.clone(), h.brand.clone(), h.price, h.currency.clone()))
            .collect::<Vec<_>>()
    };
    let expected: Vec<_> = docs
        .iter()
        .map(|d| (d.id.clone(), d.title.clone(), d.brand.clone(), d.price, d.currency.clone()))
        .collect();
    assert_eq!(index.hits.usage().0, 0);
    let read = index.search(&query).expect("search");
    assert_eq!(shown(&read), expected);
    for (hit, product) in read.hits.iter().zip(&docs) {
        assert_eq!((hit.rating, hit.in_stock), (product.rating, product.in_stock), "{}", hit.id);
        assert!(hit.description_highlight.as_deref().is_some_and(|h| h.contains("<em>shirt</em>")));
    }
    let (kept, bytes) = index.hits.usage();
    assert_eq!(kept, 6);
    assert!(bytes > 6 * std::mem::size_of::<stored::StoredHit>(), "{bytes}");
    assert_eq!(index.search(&query).expect("search"), read, "the kept hits are the same");

    // The five segments after the largest are merged into one.
    assert!(index.compact(1).expect("compact"));
    assert_eq!(index.segment_count(), 2);
    let (kept_after, bytes_after) = index.hits.usage();
    assert_eq!(kept_after, 1, "the merged segments' hits are let go");
    assert!(bytes_after < bytes / 3, "{bytes_after} of {bytes}");
    assert_eq!(index.search(&query).expect("search"), read);
    assert_eq!(index.hits.usage().0, 6);

    let bounded = stored::HitCache::new(0);
    let searcher = index.reader.searcher();
    let address = DocAddress::new(0, 0);
    let hit = bounded.get(&searcher, address).expect("read");
    assert!(docs.iter().any(|d| d.id == hit.to_hit(0.0, None).id));
    assert_eq!(bounded.usage(), (0, 0), "nothing is kept past the bound");
}
