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
        let chars = value.chars().count();
        if chars < min || chars > max {
            let message = if min == 0 {
                format!("must be at most {max} characters")
            } else {
                format!("must be {min} to {max} characters")
            };
            self.fail(field, message);
        } else if value
            .chars()
            .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r')))
        {
            self.fail(field, "must not contain control characters");
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
        for (key, value) in map {
            self.text(&format!("{field}.{key}"), key, 1, key_max, false);
            self.text(&format!("{field}.{key}"), value, 0, value_max, false);
        }
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// An email address, lower-cased; a light check (one `@`, something on either side, no
/// spaces), since only delivery proves an address.
pub(crate) fn email(value: &str) -> Result<String, FieldError> {
    let value = value.trim().to_lowercase();
    let one_at = match value.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !domain.contains('@'),
        None => false,
    };
    let ok = (3..=254).contains(&value.len())
        && one_at
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(value)
    } else {
        Err(FieldError::new("email", "must be an email address like name@example.com"))
    }
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
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= HANDLE_CHARS_MAX - 8 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
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
    fn email_rules() {
        assert_eq!(email(" Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in ["", "a", "@b", "a@", "a@b@c", "a b@c"] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }
}
