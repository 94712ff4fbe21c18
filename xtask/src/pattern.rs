//! The regular expressions CRD schemas put in `pattern`, matched as
//! Kubernetes matches them.
//!
//! The API server compiles `pattern` with Go's `regexp` package (RE2 syntax
//! and semantics) and matches it unanchored: patterns anchor themselves with
//! `^…$`. The `regex` crate implements the same syntax and the same
//! guarantees (no backtracking, no look-around or back-references), with one
//! difference that changes results: its Perl classes `\d`, `\s`, `\w` and
//! word boundaries `\b` are Unicode-aware, where RE2's are ASCII. So those
//! escapes are rewritten to RE2's ASCII meaning before compiling; a
//! `[0-9]`-style class nested in a bracket expression is valid `regex`
//! syntax, so the rewrite needs no knowledge of brackets.
//!
//! What `regex` accepts beyond RE2 (class set operations such as `[a&&b]`,
//! repetition counts over 1000) cannot appear in a CRD the API server
//! accepted; what RE2 accepts and `regex` refuses (`\C`, `\Q…\E`) makes the
//! schema fail to load, loudly.

use std::fmt;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

/// Why a pattern was refused: `regex`'s message, which points at the
/// offending part of the (rewritten) pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {:?}: {}", self.pattern, self.message)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Compiles `source` with RE2's meaning, or says why it is not a valid
    /// RE2 pattern.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let regex =
            regex::Regex::new(&with_ascii_perl_classes(source)).map_err(|err| PatternError {
                pattern: source.to_owned(),
                message: err.to_string(),
            })?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text` (RE2's `MatchString`).
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// `source` with each Perl class and word boundary replaced by its RE2
/// (ASCII) meaning, as Go's `regexp/syntax` defines them. Every other
/// escape is copied as it is, so `\\d` stays a backslash and a `d`.
fn with_ascii_perl_classes(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(escaped) = chars.next() else {
            // A trailing backslash: left for `regex` to refuse.
            out.push(c);
            break;
        };
        match escaped {
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            's' => out.push_str(r"[\t\n\f\r ]"),
            'S' => out.push_str(r"[^\t\n\f\r ]"),
            'w' => out.push_str("[0-9A-Za-z_]"),
            'W' => out.push_str("[^0-9A-Za-z_]"),
            'b' => out.push_str(r"(?-u:\b)"),
            'B' => out.push_str(r"(?-u:\B)"),
            other => {
                out.push(c);
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_as_in_re2() {
        // U+0663 ARABIC-INDIC DIGIT THREE, U+00A0 NO-BREAK SPACE, é: Unicode
        // digit, space and word character, none of them to RE2.
        let digit = Pattern::new(r"^\d$").unwrap();
        assert!(digit.is_match("3"));
        assert!(!digit.is_match("\u{663}"));
        assert!(Pattern::new(r"^\D$").unwrap().is_match("\u{663}"));
        assert!(!Pattern::new(r"^\s$").unwrap().is_match("\u{a0}"));
        assert!(
            !Pattern::new(r"^\s$").unwrap().is_match("\u{b}"),
            "RE2's \\s has no \\v"
        );
        assert!(!Pattern::new(r"^\w+$").unwrap().is_match("café"));
        assert!(Pattern::new(r"^[\w-]+$").unwrap().is_match("a-b_c"));
        assert!(!Pattern::new(r"^[^\W]$").unwrap().is_match("é"));
        // An ASCII word boundary sits between `é` and `x`; a Unicode one
        // would not.
        assert!(Pattern::new(r"\bx").unwrap().is_match("éx"));
    }

    #[test]
    fn other_escapes_are_kept() {
        assert!(Pattern::new(r"^\\d$").unwrap().is_match(r"\d"));
        assert!(Pattern::new(r"^\.\+$").unwrap().is_match(".+"));
        assert!(Pattern::new(r"^\pL$").unwrap().is_match("é"));
        assert!(Pattern::new("a\\").is_err());
    }
}
