//! A small backtracking matcher for the regular expressions CRD schemas put
//! in `pattern`.
//!
//! Kubernetes matches `pattern` with Go's RE2 engine, unanchored (patterns
//! anchor themselves with `^…$`). The CRDs this project validates use only
//! anchors, literals, escapes, bracket classes, groups with alternation and
//! the `?`, `*`, `+` quantifiers; that is what this supports. Anything else
//! (counted repetition, lookaround, Unicode classes…) is refused when the
//! schema is loaded, so a CRD that starts using it fails the tests loudly
//! instead of being checked wrongly. Patterns are short and the strings they
//! check are short, so plain backtracking is fast enough.

use std::fmt;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    alternatives: Vec<Vec<Node>>,
}

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    /// `.`: any character but a newline, as in RE2 without flags.
    Any,
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    Start,
    End,
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: usize,
        max: Option<usize>,
    },
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong or unsupported, and where.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pattern {:?}: {}", self.pattern, self.message)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Compiles `source`, or says which construct is not supported.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let chars: Vec<char> = source.chars().collect();
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
        };
        let fail = |message: String| PatternError {
            pattern: source.to_owned(),
            message,
        };
        let alternatives = parser.alternation().map_err(fail)?;
        if parser.pos != chars.len() {
            return Err(fail(format!("unbalanced `)` at offset {}", parser.pos)));
        }
        Ok(Pattern {
            source: source.to_owned(),
            alternatives,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text` (RE2's `MatchString`).
    pub fn is_match(&self, text: &str) -> bool {
        let input: Vec<char> = text.chars().collect();
        (0..=input.len()).any(|start| {
            self.alternatives
                .iter()
                .any(|seq| match_seq(seq, &input, start, &|_| true))
        })
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn alternation(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alternatives = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.sequence()?);
        }
        Ok(alternatives)
    }

    fn sequence(&mut self) -> Result<Vec<Node>, String> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(nodes)
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('?') => (0, Some(1)),
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('{') => {
                return Err(format!(
                    "counted repetition `{{…}}` at offset {} is not supported",
                    self.pos
                ))
            }
            _ => return Ok(atom),
        };
        if matches!(atom, Node::Start | Node::End) {
            return Err(format!("quantified anchor at offset {}", self.pos));
        }
        self.pos += 1;
        if matches!(self.peek(), Some('?' | '*' | '+')) {
            return Err(format!(
                "lazy or doubled quantifier at offset {} is not supported",
                self.pos
            ));
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    fn atom(&mut self) -> Result<Node, String> {
        let at = self.pos;
        let c = self.peek().expect("sequence() checked there is a char");
        self.pos += 1;
        match c {
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '.' => Ok(Node::Any),
            '(' => {
                if self.peek() == Some('?') {
                    return Err(format!(
                        "group flags or lookaround `(?` at offset {at} are not supported"
                    ));
                }
                let inner = self.alternation()?;
                if self.peek() != Some(')') {
                    return Err(format!("unclosed `(` at offset {at}"));
                }
                self.pos += 1;
                Ok(Node::Group(inner))
            }
            '[' => self.class(at),
            '\\' => self.escape(at).map(|ranges| match ranges {
                Escaped::Char(c) => Node::Char(c),
                Escaped::Class(ranges, negated) => Node::Class { ranges, negated },
            }),
            '*' | '+' | '?' => Err(format!("nothing to repeat at offset {at}")),
            other => Ok(Node::Char(other)),
        }
    }

    fn escape(&mut self, at: usize) -> Result<Escaped, String> {
        let Some(c) = self.peek() else {
            return Err(format!("trailing `\\` at offset {at}"));
        };
        self.pos += 1;
        const DIGIT: &[(char, char)] = &[('0', '9')];
        const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
        const SPACE: &[(char, char)] = &[('\t', '\n'), ('\x0c', '\r'), (' ', ' ')];
        Ok(match c {
            'd' => Escaped::Class(DIGIT.to_vec(), false),
            'D' => Escaped::Class(DIGIT.to_vec(), true),
            'w' => Escaped::Class(WORD.to_vec(), false),
            'W' => Escaped::Class(WORD.to_vec(), true),
            's' => Escaped::Class(SPACE.to_vec(), false),
            'S' => Escaped::Class(SPACE.to_vec(), true),
            'n' => Escaped::Char('\n'),
            't' => Escaped::Char('\t'),
            'r' => Escaped::Char('\r'),
            // RE2 lets any punctuation be escaped to stand for itself.
            c if c.is_ascii_punctuation() => Escaped::Char(c),
            other => {
                return Err(format!(
                    "escape `\\{other}` at offset {at} is not supported"
                ))
            }
        })
    }

    fn class(&mut self, at: usize) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(format!("unclosed `[` at offset {at}"));
            };
            // A `]` right after `[` or `[^` is a literal, as in RE2.
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            let low = self.class_char(at, &mut ranges)?;
            let Some(low) = low else { continue };
            // `a-z` is a range; a `-` first or last in the class is literal.
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let Some(high) = self.class_char(at, &mut ranges)? else {
                    return Err(format!("class range ending in a class at offset {at}"));
                };
                if high < low {
                    return Err(format!("reversed class range at offset {at}"));
                }
                ranges.push((low, high));
            } else {
                ranges.push((low, low));
            }
        }
        Ok(Node::Class { ranges, negated })
    }

    /// One member of a bracket class: a character (returned), or a class
    /// escape such as `\d` (added to `ranges` directly; returns `None`).
    fn class_char(
        &mut self,
        at: usize,
        ranges: &mut Vec<(char, char)>,
    ) -> Result<Option<char>, String> {
        let c = self
            .peek()
            .ok_or_else(|| format!("unclosed `[` at offset {at}"))?;
        self.pos += 1;
        match c {
            '\\' => match self.escape(at)? {
                Escaped::Char(c) => Ok(Some(c)),
                Escaped::Class(_, true) => Err(format!(
                    "negated class escape inside `[` at offset {at} is not supported"
                )),
                Escaped::Class(more, false) => {
                    ranges.extend(more);
                    Ok(None)
                }
            },
            '[' if self.peek() == Some(':') => Err(format!(
                "POSIX class `[:…:]` at offset {at} is not supported"
            )),
            c => Ok(Some(c)),
        }
    }
}

enum Escaped {
    Char(char),
    Class(Vec<(char, char)>, bool),
}

/// Matches `seq` at `pos`, then calls `k` with each position where the match
/// could end, until `k` accepts one (continuation-passing backtracking).
fn match_seq(seq: &[Node], input: &[char], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match seq.split_first() {
        None => k(pos),
        Some((first, rest)) => match_node(first, input, pos, &|p| match_seq(rest, input, p, k)),
    }
}

fn match_node(node: &Node, input: &[char], pos: usize, k: &dyn Fn(usize) -> bool) -> bool {
    match node {
        Node::Char(c) => input.get(pos) == Some(c) && k(pos + 1),
        Node::Any => input.get(pos).is_some_and(|&c| c != '\n') && k(pos + 1),
        Node::Class { ranges, negated } => {
            input.get(pos).is_some_and(|&c| {
                ranges.iter().any(|&(low, high)| low <= c && c <= high) != *negated
            }) && k(pos + 1)
        }
        Node::Start => pos == 0 && k(pos),
        Node::End => pos == input.len() && k(pos),
        Node::Group(alternatives) => alternatives.iter().any(|seq| match_seq(seq, input, pos, k)),
        Node::Repeat { node, min, max } => match_repeat(node, *min, *max, 0, input, pos, k),
    }
}

/// Greedy repetition: one more iteration first, then stopping here.
fn match_repeat(
    node: &Node,
    min: usize,
    max: Option<usize>,
    count: usize,
    input: &[char],
    pos: usize,
    k: &dyn Fn(usize) -> bool,
) -> bool {
    if max.is_none_or(|max| count < max)
        && match_node(node, input, pos, &|p| {
            if p == pos {
                // An empty iteration could repeat forever and changes
                // nothing: whatever minimum is left is met by more of them.
                k(p)
            } else {
                match_repeat(node, min, max, count + 1, input, p, k)
            }
        })
    {
        return true;
    }
    count >= min && k(pos)
}
