//! The line-level rules every generated file shares, so each grammar only says what its lines
//! hold: the text is split on `\n` alone (a `\r` is a refused control character, never a line
//! ending nginx and Rust would read differently), a block body is indented by exactly four
//! spaces, words are separated by exactly one space, and refusals quote at most a short,
//! escaped piece of what they refuse.

use super::Refusal;

/// Longest part of an offending token a refusal quotes.
const QUOTE_CHARS: usize = 60;

/// At most [`QUOTE_CHARS`] of `token`, Debug-quoted: control characters and newlines come out
/// escaped, so a refusal can neither forge a log line nor carry a file's content.
pub(super) fn quote(token: &str) -> String {
    let cut: String = token.chars().take(QUOTE_CHARS).collect();
    if cut.len() < token.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// One line of the file and its 1-based number.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'a> {
    pub no: usize,
    pub text: &'a str,
}

impl<'a> Line<'a> {
    pub fn refuse(&self, reason: impl Into<String>) -> Refusal {
        Refusal {
            line: self.no,
            reason: reason.into(),
        }
    }

    /// Between blocks the templates write blank lines and `#` comments at column 0.
    pub fn is_gap(&self) -> bool {
        self.text.is_empty() || self.text.starts_with('#')
    }

    /// The body of a line inside a block: after exactly four spaces, not blank.
    fn indented(&self) -> Result<&'a str, Refusal> {
        self.text
            .strip_prefix("    ")
            .filter(|b| !b.is_empty() && !b.starts_with(' '))
            .ok_or_else(|| self.refuse("expected a line indented by exactly four spaces"))
    }

    /// The words of a line inside a block (HAProxy's, which end in no `;`).
    pub fn indented_words(&self) -> Result<Vec<&'a str>, Refusal> {
        self.words(self.indented()?)
    }

    /// The words of an nginx directive inside a block: `    name arg...;`, one directive a line.
    pub fn directive(&self) -> Result<Vec<&'a str>, Refusal> {
        let body = self.indented()?;
        let Some(body) = body.strip_suffix(';') else {
            return Err(self.refuse("expected a directive ending in `;`"));
        };
        if body.contains(';') {
            return Err(self.refuse("one directive per line, with nothing after its `;`"));
        }
        self.words(body)
    }

    /// The words of a line at column 0.
    pub fn top_words(&self) -> Result<Vec<&'a str>, Refusal> {
        if self.text.starts_with(' ') {
            return Err(self.refuse("unexpected indentation outside a block"));
        }
        self.words(self.text)
    }

    fn words(&self, body: &'a str) -> Result<Vec<&'a str>, Refusal> {
        let words: Vec<&str> = body.split(' ').collect();
        if words.iter().any(|w| w.is_empty()) {
            return Err(self.refuse("words must be separated by exactly one space, with none at the end"));
        }
        Ok(words)
    }
}

/// The lines of a file, read front to back.
pub(super) struct Lines<'a> {
    lines: Vec<&'a str>,
    next: usize,
}

impl<'a> Lines<'a> {
    /// Refuses a file that does not end in a newline (every rendered file does) or holds a control
    /// character anywhere (the renderers write none, not even a tab).
    pub fn new(text: &'a str) -> Result<Self, Refusal> {
        let body = text.strip_suffix('\n').ok_or_else(|| Refusal {
            line: 0,
            reason: "the file is empty or does not end with a newline".into(),
        })?;
        let lines: Vec<&str> = body.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(c) = line.chars().find(|c| c.is_control()) {
                return Err(Refusal {
                    line: i + 1,
                    reason: format!("control character {c:?}"),
                });
            }
        }
        Ok(Self { lines, next: 0 })
    }

    pub fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.next).map(|text| Line {
            no: self.next + 1,
            text,
        })
    }

    pub fn next_line(&mut self) -> Option<Line<'a>> {
        let line = self.peek()?;
        self.next += 1;
        Some(line)
    }

    /// Skips blank lines and comments, then the next line, if any.
    pub fn next_after_gaps(&mut self) -> Option<Line<'a>> {
        while self.peek().is_some_and(|l| l.is_gap()) {
            self.next += 1;
        }
        self.next_line()
    }

    /// A refusal for a file that ends where `what` was expected.
    pub fn ended(&self, what: &str) -> Refusal {
        Refusal {
            line: self.lines.len(),
            reason: format!("the file ends where {what} was expected"),
        }
    }

    /// The next line at column 0, past gaps, which must be exactly `want`.
    pub fn expect_top(&mut self, want: &str) -> Result<Line<'a>, Refusal> {
        let line = self.next_after_gaps().ok_or_else(|| self.ended(&format!("`{want}`")))?;
        if line.text != want {
            return Err(line.refuse(format!("expected `{want}`, found {}", quote(line.text))));
        }
        Ok(line)
    }

    /// The directives of an nginx block body, up to its closing `}` at column 0 (returned too).
    /// Blank lines, comments and nested blocks are refused: the templates write none in a block.
    pub fn block(&mut self, what: &str) -> Result<(Vec<Directive<'a>>, Line<'a>), Refusal> {
        let mut body = Vec::new();
        loop {
            let line = self
                .next_line()
                .ok_or_else(|| self.ended(&format!("the `}}` closing the {what}")))?;
            if line.text == "}" {
                return Ok((body, line));
            }
            let words = line.directive()?;
            body.push(Directive { line, words });
        }
    }

    /// The lines of a HAProxy section body: every following line that starts with a space.
    pub fn section(&mut self) -> Result<Vec<Directive<'a>>, Refusal> {
        let mut body = Vec::new();
        while let Some(line) = self.peek().filter(|l| l.text.starts_with(' ')) {
            self.next += 1;
            let words = line.indented_words()?;
            body.push(Directive { line, words });
        }
        Ok(body)
    }
}

/// One directive of a block body and its words (never empty), without the `;`.
#[derive(Debug)]
pub(super) struct Directive<'a> {
    pub line: Line<'a>,
    pub words: Vec<&'a str>,
}

impl Directive<'_> {
    /// A refusal of this directive where `want` was expected.
    pub fn not(&self, want: &str) -> Refusal {
        let name = self.words.first().copied().unwrap_or_default();
        if want.split(' ').next() == Some(name) {
            self.line
                .refuse(format!("expected `{want}` here; the arguments differ"))
        } else {
            self.line
                .refuse(format!("expected `{want}` here, found {}", quote(name)))
        }
    }

    /// Checks that this directive is exactly `want` (words separated by one space).
    pub fn exactly(&self, want: &str) -> Result<(), Refusal> {
        if self.words.iter().copied().eq(want.split(' ')) {
            Ok(())
        } else {
            Err(self.not(want))
        }
    }
}

/// `want` expected in `body` at `at`, or before the block's closing line.
pub(super) fn expect<'d, 'a>(
    body: &'d [Directive<'a>],
    at: usize,
    want: &str,
    close: Line<'_>,
) -> Result<&'d Directive<'a>, Refusal> {
    let d = body
        .get(at)
        .ok_or_else(|| close.refuse(format!("expected `{want}` before the block ends")))?;
    d.exactly(want)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_escape_and_shorten() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(100);
        assert_eq!(quote(&long), format!("{:?}...", "x".repeat(60)));
        assert_eq!(quote("é"), "\"é\"");
    }

    #[test]
    fn lines_refuse_control_characters_and_a_missing_newline() {
        assert_eq!(Lines::new("a\r\nb\r\n").err().map(|r| r.line), Some(1));
        assert!(
            Lines::new("a\nb\tc\n")
                .err()
                .is_some_and(|r| r.line == 2 && r.reason.contains("'\\t'"))
        );
        assert!(Lines::new("a").err().is_some_and(|r| r.line == 0));
        assert!(Lines::new("").err().is_some_and(|r| r.line == 0));
    }

    #[test]
    fn directives_are_one_a_line_with_exact_spacing() {
        let line = |text| Line { no: 1, text };
        assert_eq!(
            line("    listen 1.2.3.4:80;").directive().ok(),
            Some(vec!["listen", "1.2.3.4:80"])
        );
        for bad in [
            "   listen 1.2.3.4:80;",
            "     listen 1.2.3.4:80;",
            "    listen  1.2.3.4:80;",
            "    listen 1.2.3.4:80; ",
            "    listen 1.2.3.4:80",
            "    listen 1.2.3.4:80; include /etc/shadow;",
            "    listen 1.2.3.4:80;;",
            "    ;",
            "    ",
        ] {
            assert!(line(bad).directive().is_err(), "{bad:?}");
        }
    }
}
