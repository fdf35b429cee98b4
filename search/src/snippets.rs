//! Highlighted snippets: the fragment of a hit's text where a query's words weigh the
//! most, its words marked in `<em>`, as HTML.
//!
//! The fragments, their choice and the escaping are those of tantivy's
//! `SnippetGenerator` (a test compares the two), without its costs per hit: a copy of
//! the analyser, a lower-cased copy and an ordered-map lookup per word of the text, and
//! a copy of the fragment before it is written out.

use std::ops::Range;

use tantivy::tokenizer::TextAnalyzer;
use tantivy::Score;

/// Finds and marks the best fragment of texts for a few stems.
pub(crate) struct Highlighter {
    analyzer: TextAnalyzer,
    /// The stems looked for, each with its weight in choosing the fragment.
    stems: Vec<(String, Score)>,
    /// The most characters (bytes, as tantivy counts) a fragment spans.
    chars: usize,
    /// The marked ranges of the fragment being read and of the best one so far.
    marks: Vec<Range<usize>>,
    best_marks: Vec<Range<usize>>,
}

/// A fragment of the text: where it starts and stops, and its words' weight.
#[derive(Clone, Copy)]
struct Fragment {
    start: usize,
    stop: usize,
    score: Score,
}

impl Highlighter {
    /// Marks `stems` (each once: a stem given twice keeps its first weight) in
    /// fragments of at most `chars`, with the words `analyzer` makes of a text.
    pub(crate) fn new(analyzer: TextAnalyzer, stems: Vec<(String, Score)>, chars: usize) -> Self {
        let mut unique: Vec<(String, Score)> = Vec::with_capacity(stems.len());
        for (stem, score) in stems {
            if !unique.iter().any(|(s, _)| *s == stem) {
                unique.push((stem, score));
            }
        }
        Highlighter { analyzer, stems: unique, chars, marks: Vec::new(), best_marks: Vec::new() }
    }

    /// The best fragment of `text` as HTML, or `None` when no word of it is marked.
    pub(crate) fn html(&mut self, text: &str) -> Option<String> {
        let Highlighter { analyzer, stems, chars, marks, best_marks } = self;
        if stems.is_empty() {
            return None;
        }
        marks.clear();
        best_marks.clear();
        let mut best: Option<Fragment> = None;
        let mut fragment = Fragment { start: 0, stop: 0, score: 0.0 };
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            if token.offset_to - fragment.start > *chars {
                close(fragment, &mut best, marks, best_marks);
                fragment =
                    Fragment { start: token.offset_from, stop: token.offset_from, score: 0.0 };
            }
            fragment.stop = token.offset_to;
            if let Some(weight) = weight(stems, &token.text) {
                fragment.score += weight;
                marks.push(token.offset_from..token.offset_to);
            }
        }
        close(fragment, &mut best, marks, best_marks);
        let best = best?;
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

/// The weight of a word of the text, if it is one of `stems` (compared lower-cased).
fn weight(stems: &[(String, Score)], word: &str) -> Option<Score> {
    let find = |word: &str| stems.iter().find(|(s, _)| s == word).map(|(_, w)| *w);
    if word.chars().any(char::is_uppercase) {
        find(&word.to_lowercase())
    } else {
        find(word)
    }
}

/// Ends `fragment`, whose marks are `marks`: it becomes the best (its marks moved to
/// `best_marks`) if it weighs more than the best so far. Of equal weights the first
/// fragment is kept, as tantivy keeps it.
fn close(
    fragment: Fragment,
    best: &mut Option<Fragment>,
    marks: &mut Vec<Range<usize>>,
    best_marks: &mut Vec<Range<usize>>,
) {
    if fragment.score > 0.0 && best.is_none_or(|b| fragment.score > b.score) {
        *best = Some(fragment);
        std::mem::swap(marks, best_marks);
    }
    marks.clear();
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
