//! Field checks shared by the command handlers. Each pushes a [`FieldError`] naming the
//! field's path instead of failing fast, so a caller learns every problem at once.

use std::collections::BTreeMap;

use crate::error::FieldError;

/// Collects the field errors of one command.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    pub(crate) errors: Vec<FieldError>,
}

impl Checks {
    pub(crate) fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub(crate) fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// A text of `min..=max` characters without control characters (newlines and tabs
    /// are allowed where `multiline`).
    pub(crate) fn text(
        &mut self,
        field: &str,
        value: &str,
        min: usize,
        max: usize,
        multiline: bool,
    ) {
        if let Some(message) = text_problem(value, min, max, multiline) {
            self.fail(field, message);
        }
    }

    /// A string map of at most `entries_max` entries, keys of `1..=key_max` and values
    /// of `0..=value_max` characters.
    pub(crate) fn map(
        &mut self,
        field: &str,
        map: &BTreeMap<String, String>,
        entries_max: usize,
        key_max: usize,
        value_max: usize,
    ) {
        if map.len() > entries_max {
            self.fail(field, format!("must have at most {entries_max} entries"));
            return;
        }
        // The field's name is made only for an error: most maps pass.
        for (key, value) in map {
            for (text, min, max) in [(key, 1, key_max), (value, 0, value_max)] {
                if let Some(message) = text_problem(text, min, max, false) {
                    self.fail(format!("{field}.{key}"), message);
                }
            }
        }
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// What is wrong with a text that must have `min..=max` characters and no control
/// characters (newlines and tabs allowed where `multiline`), if anything.
fn text_problem(value: &str, min: usize, max: usize, multiline: bool) -> Option<String> {
    // Printable ASCII (most text) is counted by its length and has no control
    // character; the rest is counted and scanned by chars.
    let (chars, control) = if printable_ascii(value.as_bytes()) {
        (value.len(), false)
    } else {
        let allowed = |c: char| multiline && matches!(c, '\n' | '\t' | '\r');
        (value.chars().count(), value.chars().any(|c| c.is_control() && !allowed(c)))
    };
    if chars < min || chars > max {
        Some(if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        })
    } else if control {
        Some("must not contain control characters".to_string())
    } else {
        None
    }
}

/// Whether every byte is printable ASCII (`0x20..=0x7e`), eight at a time: a byte under
/// 0x20 by the "has a byte less than n" bit trick (exact for n <= 128), one of 0x7f and
/// over by its high bit, set once 1 is added or already (a carry out of a byte over
/// 0x7f only follows a byte already found). Texts are checked on the sequencer for
/// every command that carries one; byte by byte this was about five instructions a byte.
pub(crate) fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let below = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let above = (word.wrapping_add(ONES) | word) & HIGHS;
        if below | above != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| (b' '..0x7f).contains(b))
}

/// An email address, lower-cased; a light check (one `@`, something on either side, no
/// spaces), since only delivery proves an address.
pub(crate) fn email(value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    let checked = if value.is_ascii() {
        ascii_email_ok(value.as_bytes()).then(|| value.to_ascii_lowercase())
    } else {
        let value = value.to_lowercase();
        email_ok(&value).then_some(value)
    };
    checked
        .ok_or_else(|| FieldError::new("email", "must be an email address like name@example.com"))
}

/// The rule of [`email`] on lower-cased text: 3 to 254 bytes, one `@` with something on
/// either side, no whitespace or control character.
fn email_ok(value: &str) -> bool {
    let one_at = match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    let blank = value.chars().any(|c| c.is_whitespace() || c.is_control());
    (3..=254).contains(&value.len()) && one_at && !blank
}

/// [`email_ok`] for ASCII, in one pass over the bytes (a checkout's guest email is
/// checked on the sequencer): lower-casing ASCII changes no byte it looks at, and in
/// ASCII the whitespace and control characters are the bytes up to the space, and DEL.
fn ascii_email_ok(value: &[u8]) -> bool {
    let (mut ats, mut at, mut blank) = (0usize, 0usize, false);
    for (i, &b) in value.iter().enumerate() {
        if b == b'@' {
            ats += 1;
            at = i;
        }
        blank |= b <= b' ' || b == 0x7f;
    }
    (3..=254).contains(&value.len()) && ats == 1 && at > 0 && at + 1 < value.len() && !blank
}

/// The longest handle.
pub(crate) const HANDLE_CHARS_MAX: usize = 100;

/// A handle: lower-case letters and digits in words joined by single hyphens.
pub(crate) fn is_handle(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= HANDLE_CHARS_MAX
        && value.split('-').all(|word| {
            !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The handle a title suggests: `"Blue T-Shirt (M)"` → `blue-t-shirt-m`.
pub(crate) fn slugify(title: &str) -> String {
    let mut out = String::with_capacity(title.len().min(HANDLE_CHARS_MAX));
    // Adds one lower-case char; true once the slug is long enough.
    let mut push = |c: char| {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        out.len() >= HANDLE_CHARS_MAX - 8
    };
    for c in title.chars() {
        // An ASCII char lower-cases to one ASCII char, without the Unicode tables; a
        // non-ASCII one may lower-case to several, or to ASCII (the Kelvin sign to `k`).
        let full = if c.is_ascii() {
            push(c.to_ascii_lowercase())
        } else {
            c.to_lowercase().any(&mut push)
        };
        if full {
            break;
        }
    }
    out.truncate(out.trim_end_matches('-').len());
    if out.is_empty() {
        "product".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_handles() {
        for (title, slug) in [
            ("Blue T-Shirt (M)", "blue-t-shirt-m"),
            ("  ¡Olé!  ", "ol"),
            ("日本", "product"),
            ("a--b", "a-b"),
            // Non-ASCII that lower-cases to ASCII: the Kelvin sign is a `k`.
            ("\u{212A}elvin Scale", "kelvin-scale"),
            ("ÀB", "b"),
        ] {
            assert_eq!(slugify(title), slug);
            assert!(is_handle(&slugify(title)));
        }
        assert!(is_handle(&slugify(&"word ".repeat(100))));
    }

    #[test]
    fn handle_rules() {
        for ok in ["a", "blue-shirt", "x1-2"] {
            assert!(is_handle(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a b", "a_b"] {
            assert!(!is_handle(bad), "{bad}");
        }
    }

    #[test]
    fn texts_are_counted_in_chars_and_refuse_control_characters() {
        let problem = |value: &str, multiline| {
            let mut checks = Checks::default();
            checks.text("f", value, 1, 3, multiline);
            checks.errors.first().map(|e| e.message.clone())
        };
        assert_eq!(problem("abc", false), None);
        assert_eq!(problem("déf", false), None, "three chars, four bytes");
        assert_eq!(problem("日本語", false), None);
        assert_eq!(problem("abcd", false).as_deref(), Some("must be 1 to 3 characters"));
        assert_eq!(problem("", false).as_deref(), Some("must be 1 to 3 characters"));
        for control in ["a\nb", "a\tb", "a\u{7f}", "a\u{0}", "é\u{85}"] {
            let refused = Some("must not contain control characters");
            assert_eq!(problem(control, false).as_deref(), refused, "{control:?}");
        }
        assert_eq!(problem("a\nb", true), None, "a newline is allowed in multiline text");
        assert_eq!(problem("é\r\n", true), None);
        assert!(problem("a\u{7f}", true).is_some(), "DEL is not a line break");
    }

    #[test]
    fn printable_ascii_is_the_byte_by_byte_rule() {
        let one_by_one = |bytes: &[u8]| bytes.iter().all(|b| (b' '..0x7f).contains(b));
        // Every byte value at every place of texts around the word size, beside
        // neighbours at both ends of the printable range.
        for len in [1, 7, 8, 9, 16, 17] {
            for fill in [b' ', b'a', b'~'] {
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut text = vec![fill; len];
                        text[at] = byte;
                        assert_eq!(printable_ascii(&text), one_by_one(&text), "{text:?}");
                        // A byte over 0x7f right before another: a carry between them.
                        if at + 1 < len {
                            text[at + 1] = 0xff;
                            assert_eq!(printable_ascii(&text), one_by_one(&text), "{text:?}");
                        }
                    }
                }
            }
        }
        assert!(printable_ascii(b""));
    }

    #[test]
    fn email_rules() {
        assert_eq!(email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        assert_eq!(email("Ünï@Example.com").unwrap(), "ünï@example.com");
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c", "a\u{7f}@b", "a\u{a0}b@c", "a\tb@c"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert_eq!(email("a@b").unwrap(), "a@b");
        let long = format!("{}@example.com", "a".repeat(242));
        assert_eq!(email(&long).unwrap().len(), 254);
        assert!(email(&format!("a{long}")).is_err(), "255 bytes");
    }

    #[test]
    fn the_ascii_email_check_is_the_general_one() {
        // Every string of up to four bytes over an alphabet with the bytes the rule
        // looks at, and longer ones at the length bounds.
        let alphabet = [b'a', b'B', b'@', b' ', b'\t', 0x7f, 0x1f, b'.'];
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = texts
                .iter()
                .filter(|t| t.len() == texts.last().map_or(0, Vec::len))
                .flat_map(|t| alphabet.iter().map(move |&b| [t.as_slice(), &[b]].concat()))
                .collect();
            texts.extend(longer);
        }
        for n in [252, 253, 254, 255] {
            texts.push([b"x@".as_slice(), &vec![b'y'; n - 2]].concat());
            texts.push([vec![b'y'; n - 2].as_slice(), b"@x"].concat());
        }
        for text in &texts {
            let text = std::str::from_utf8(text).unwrap();
            assert_eq!(
                ascii_email_ok(text.as_bytes()),
                email_ok(&text.to_ascii_lowercase()),
                "{text:?}"
            );
        }
    }
}
