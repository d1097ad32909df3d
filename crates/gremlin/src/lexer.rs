//! Tokens of the Gremlin dialect (Skydive's Gremlin lexical grammar).
//!
//! Departures from Skydive's scanner, each deliberate (see `docs/compat.md`):
//! * a carriage return is whitespace (Skydive made it an illegal token);
//! * a string ends at the quote that opened it, and `\` before that quote escapes it
//!   (Skydive ended a string at the next quote of either kind, so `"it's"` was `it`);
//! * an unterminated string is an error (Skydive ran it to the end of the input);
//! * a `-` directly before a digit starts a negative number (Skydive had no sign).

use crate::error::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    /// An identifier, upper-cased (keywords are case-insensitive).
    Ident(String),
    /// A number's text, as written.
    Number(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    Dot,
    Eof,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    /// The text as written (for messages).
    pub lit: String,
    /// Byte offset in the query.
    pub pos: usize,
}

impl Token {
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Eof => "end of query".to_string(),
            _ => self.lit.clone(),
        }
    }
}

/// Splits a query into tokens.
pub fn tokenize(input: &str) -> Result<Vec<Token>, Error> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
            }
            b'(' | b')' | b',' | b'.' => {
                let kind = match c {
                    b'(' => TokenKind::LParen,
                    b')' => TokenKind::RParen,
                    b',' => TokenKind::Comma,
                    _ => TokenKind::Dot,
                };
                out.push(Token {
                    kind,
                    lit: (c as char).to_string(),
                    pos: start,
                });
                i += 1;
            }
            b'\'' | b'"' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                let mut closed = false;
                while i < bytes.len() {
                    let b = bytes[i];
                    if b == b'\\' && i + 1 < bytes.len() && bytes[i + 1] == quote {
                        s.push(quote as char);
                        i += 2;
                        continue;
                    }
                    if b == quote {
                        closed = true;
                        i += 1;
                        break;
                    }
                    // Copy one UTF-8 character.
                    let ch_len = utf8_len(b);
                    let end = (i + ch_len).min(bytes.len());
                    s.push_str(&input[i..end]);
                    i = end;
                }
                if !closed {
                    return Err(Error::at(start, "Unterminated string".to_string()));
                }
                out.push(Token {
                    kind: TokenKind::Str(s),
                    lit: input[start..i].to_string(),
                    pos: start,
                });
            }
            b'0'..=b'9' | b'-' => {
                if c == b'-' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return Err(Error::at(start, "Unexpected character '-'".to_string()));
                }
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                    let mut j = i;
                    while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_')
                    {
                        j += 1;
                    }
                    return Err(Error::at(
                        start,
                        format!(
                            "Expected number token, got: {} (quote durations such as \"10s\")",
                            &input[start..j]
                        ),
                    ));
                }
                out.push(Token {
                    kind: TokenKind::Number(input[start..i].to_string()),
                    lit: input[start..i].to_string(),
                    pos: start,
                });
            }
            c if c.is_ascii_alphabetic() => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let lit = &input[start..i];
                out.push(Token {
                    kind: TokenKind::Ident(lit.to_ascii_uppercase()),
                    lit: lit.to_string(),
                    pos: start,
                });
            }
            _ => {
                let ch = input[start..].chars().next().unwrap_or('?');
                return Err(Error::at(start, format!("Unexpected character '{ch}'")));
            }
        }
    }
    out.push(Token {
        kind: TokenKind::Eof,
        lit: String::new(),
        pos: input.len(),
    });
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(q: &str) -> Vec<TokenKind> {
        tokenize(q).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn identifiers_are_case_insensitive() {
        assert_eq!(
            kinds("g.v()"),
            vec![
                TokenKind::Ident("G".into()),
                TokenKind::Dot,
                TokenKind::Ident("V".into()),
                TokenKind::LParen,
                TokenKind::RParen,
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn strings_end_at_their_own_quote() {
        assert_eq!(kinds(r#""it's""#)[0], TokenKind::Str("it's".into()));
        assert_eq!(
            kinds(r#"'say "hi"'"#)[0],
            TokenKind::Str("say \"hi\"".into())
        );
        assert_eq!(kinds(r#"'a\'b'"#)[0], TokenKind::Str("a'b".into()));
        assert_eq!(kinds(r#"'a\.b'"#)[0], TokenKind::Str(r"a\.b".into()));
        assert_eq!(kinds("'é'")[0], TokenKind::Str("é".into()));
    }

    #[test]
    fn unterminated_string_is_an_error_with_position() {
        let e = tokenize("G.V().Has('Name").unwrap_err();
        assert_eq!(e.to_string(), "Unterminated string at column 11");
    }

    #[test]
    fn numbers_and_negative_numbers() {
        assert_eq!(kinds("1.5")[0], TokenKind::Number("1.5".into()));
        assert_eq!(kinds("-3")[0], TokenKind::Number("-3".into()));
        let e = tokenize("Context(10s)").unwrap_err();
        assert!(
            e.to_string().starts_with("Expected number token, got: 10s"),
            "{e}"
        );
    }

    #[test]
    fn carriage_return_is_whitespace() {
        assert_eq!(kinds("G\r\n.V()").len(), 6);
    }

    #[test]
    fn illegal_character_is_reported() {
        let e = tokenize("G.V()#").unwrap_err();
        assert_eq!(e.to_string(), "Unexpected character '#' at column 6");
    }
}
