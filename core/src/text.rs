//! Untrusted text in messages and logs. A path from the state repo, a name from a DNS answer or
//! a line nginx quotes may hold a newline and a forged `error:` line, or terminal escapes; every
//! such string is printed through [`Escaped`], so one log line stays one line and says only what
//! it quotes.

use std::fmt;

/// Displays its text with control characters, Unicode direction overrides and backslashes
/// escaped as Rust writes them (`\n`, `\u{1b}`, `\\`); everything else as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' || c.is_control() || is_direction_control(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Shorthand for [`Escaped`].
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// Marks that reorder how a terminal shows the text around them (the "Trojan Source" set).
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_stays_one_line() {
        let forged = "lb/lb-1/x.conf\nerror: the applier was replaced\r\x1b[2K\\";
        let shown = escaped(forged).to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'),
            "{shown}"
        );
        assert_eq!(
            shown,
            "lb/lb-1/x.conf\\nerror: the applier was replaced\\r\\u{1b}[2K\\\\"
        );
        assert_eq!(
            escaped("blog/frontend.conf ünïcode").to_string(),
            "blog/frontend.conf ünïcode"
        );
        assert_eq!(escaped("a\u{202e}b").to_string(), "a\\u{202e}b");
    }
}
