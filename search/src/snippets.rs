//! Highlighted snippets: the fragment of a hit's text where a query's words weigh the
//! most, its words marked in `<em>`, as HTML.
//!
//! The fragments, their choice and the escaping are those of tantivy's
//! `SnippetGenerator` (a test compares the two), without its costs per hit: a copy of
//! the analyser, a lower-cased copy and an ordered-map lookup per word of the text, and
//! a copy of the fragment before it is written out.

use std::collections::HashMap;
use std::ops::Range;

use tantivy::tokenizer::TextAnalyzer;
use tantivy::Score;

use crate::memo;
use crate::WORD_BYTES_MAX;

/// Finds and marks the best fragment of texts for a few stems.
pub(crate) struct Highlighter {
    analyzer: TextAnalyzer,
    /// The first characters of the stems: only a word beginning with one is stemmed
    /// (as the analyser's `KeptStemmer::only_initials` does).
    initials: Vec<char>,
    /// Made on the first word the table of stems does not hold.
    stemmer: Option<rust_stemmers::Stemmer>,
    /// The stems looked for, each with its weight in choosing the fragment.
    stems: Vec<(String, Score)>,
    /// The most characters (bytes, as tantivy counts) a fragment spans.
    chars: usize,
    /// The marked ranges of the fragment being read and of the best one so far.
    marks: Vec<Range<usize>>,
    best_marks: Vec<Range<usize>>,
    /// A word of an ASCII text, lower-cased.
    word: String,
    /// The weight of each word of ASCII texts that begins as a stem does, lower-cased:
    /// the hits of a page share most of their words.
    seen: HashMap<Box<str>, Option<Score>, foldhash::fast::RandomState>,
}

/// A fragment of the text: where it starts and stops, and its words' weight.
#[derive(Clone, Copy)]
struct Fragment {
    start: usize,
    stop: usize,
    score: Score,
}

/// The fragments of one text as its words are read.
struct Walk<'a> {
    chars: usize,
    fragment: Fragment,
    best: Option<Fragment>,
    marks: &'a mut Vec<Range<usize>>,
    best_marks: &'a mut Vec<Range<usize>>,
}

impl Walk<'_> {
    /// The next word, at `from..to` of the text, and its weight if it is a stem looked
    /// for: tantivy's `search_fragments`, one word at a time.
    fn word(&mut self, from: usize, to: usize, weight: Option<Score>) {
        if to - self.fragment.start > self.chars {
            self.close();
            self.fragment = Fragment { start: from, stop: from, score: 0.0 };
        }
        self.fragment.stop = to;
        if let Some(weight) = weight {
            self.fragment.score += weight;
            self.marks.push(from..to);
        }
    }

    /// Forgets every word read.
    fn restart(&mut self) {
        self.fragment = Fragment { start: 0, stop: 0, score: 0.0 };
        self.best = None;
        self.marks.clear();
        self.best_marks.clear();
    }

    /// Ends the fragment being read: it becomes the best (its marks moved to
    /// `best_marks`) if it weighs more than the best so far. Of equal weights the
    /// first fragment is kept, as tantivy keeps it.
    fn close(&mut self) {
        let fragment = self.fragment;
        if fragment.score > 0.0 && self.best.is_none_or(|b| fragment.score > b.score) {
            self.best = Some(fragment);
            std::mem::swap(self.marks, self.best_marks);
        }
        self.marks.clear();
    }
}

impl Highlighter {
    /// Marks `stems` (each once: a stem given twice keeps its first weight) in
    /// fragments of at most `chars`, with the words `analyzer` makes of a text;
    /// `analyzer` stems only the words beginning with one of `initials`.
    pub(crate) fn new(
        analyzer: TextAnalyzer,
        initials: Vec<char>,
        stems: Vec<(String, Score)>,
        chars: usize,
    ) -> Self {
        let mut unique: Vec<(String, Score)> = Vec::with_capacity(stems.len());
        for (stem, score) in stems {
            if !unique.iter().any(|(s, _)| *s == stem) {
                unique.push((stem, score));
            }
        }
        Highlighter {
            analyzer,
            initials,
            stemmer: None,
            stems: unique,
            chars,
            marks: Vec::new(),
            best_marks: Vec::new(),
            word: String::new(),
            seen: HashMap::default(),
        }
    }

    /// The best fragment of `text` as HTML, or `None` when no word of it is marked.
    pub(crate) fn html(&mut self, text: &str) -> Option<String> {
        let Highlighter {
            analyzer,
            initials,
            stemmer,
            stems,
            chars,
            marks,
            best_marks,
            word,
            seen,
        } = self;
        if stems.is_empty() {
            return None;
        }
        marks.clear();
        best_marks.clear();
        let fragment = Fragment { start: 0, stop: 0, score: 0.0 };
        let mut walk = Walk { chars: *chars, fragment, best: None, marks, best_marks };
        if !ascii_words(text, initials, stemmer, stems, word, seen, &mut walk) {
            walk.restart();
            let mut stream = analyzer.token_stream(text);
            while let Some(token) = stream.next() {
                walk.word(token.offset_from, token.offset_to, weight(stems, &token.text));
            }
        }
        walk.close();
        let best = walk.best?;
        let shown = &text[best.start..best.stop];
        let marked: Vec<Range<usize>> =
            best_marks.iter().map(|m| m.start - best.start..m.end - best.start).collect();
        let mut html = String::with_capacity(shown.len() + 32);
        let mut at = 0;
        for range in tantivy::snippet::collapse_overlapped_ranges(&marked) {
            escape(&shown[at..range.start], &mut html);
            html.push_str("<em>");
            escape(&shown[range.clone()], &mut html);
            html.push_str("</em>");
            at = range.end;
        }
        escape(&shown[at..], &mut html);
        Some(html)
    }
}

/// Reads the words of `text` into `walk` as the analyser makes them, if `text` is ASCII
/// (the common case), without its chain of boxed streams: runs of letters and digits
/// (`SimpleTokenizer`), shorter than `WORD_BYTES_MAX` (`RemoveLongFilter`), lower-cased
/// (`LowerCaser`; ASCII folding changes no ASCII word), stemmed if they begin as a stem
/// does (`KeptStemmer`). A word that does not begin as a stem does is passed over
/// unread: it cannot be one. Returns `false`, with `walk` half-read, at the first byte
/// that is not ASCII.
fn ascii_words(
    text: &str,
    initials: &[char],
    stemmer: &mut Option<rust_stemmers::Stemmer>,
    stems: &[(String, Score)],
    word: &mut String,
    seen: &mut HashMap<Box<str>, Option<Score>, foldhash::fast::RandomState>,
    walk: &mut Walk<'_>,
) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if !bytes[at].is_ascii_alphanumeric() {
            if !bytes[at].is_ascii() {
                return false;
            }
            at += 1;
            continue;
        }
        let from = at;
        while at < bytes.len() && bytes[at].is_ascii_alphanumeric() {
            at += 1;
        }
        if at - from >= WORD_BYTES_MAX {
            continue;
        }
        if !initials.contains(&char::from(bytes[from].to_ascii_lowercase())) {
            walk.word(from, at, None);
            continue;
        }
        word.clear();
        word.push_str(&text[from..at]);
        word.make_ascii_lowercase();
        let found = match seen.get(word.as_str()) {
            Some(found) => *found,
            None => {
                let found = weight(stems, &memo::stem(stemmer, word));
                seen.insert(word.as_str().into(), found);
                found
            }
        };
        walk.word(from, at, found);
    }
    true
}

/// The weight of a word of the text, if it is one of `stems` (compared lower-cased).
fn weight(stems: &[(String, Score)], word: &str) -> Option<Score> {
    let find = |word: &str| stems.iter().find(|(s, _)| s == word).map(|(_, w)| *w);
    if word.chars().any(char::is_uppercase) {
        find(&word.to_lowercase())
    } else {
        find(word)
    }
}

/// `text` with HTML's special characters escaped, as tantivy's snippets escape them.
pub(crate) fn escape(text: &str, html: &mut String) {
    let mut at = 0;
    for (i, b) in text.bytes().enumerate() {
        let entity = match b {
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        html.push_str(&text[at..i]);
        html.push_str(entity);
        at = i + 1;
    }
    html.push_str(&text[at..]);
}
