//! The python-dotenv dialect of `.env` files, pure: text in, entries out, and a quoter whose lines
//! read back exactly. Shared by `ikit export` and the migration sources.
//!
//! The grammar follows python-dotenv's parser statement by statement (its regular expressions have
//! leftmost-first semantics, which the `regex` crate shares), so a file means here what it means to
//! the seeds' Python services: `export` prefixes, `'single'` and `"double"` quotes (multi-line
//! allowed), the escapes each quote style decodes, `#` comments, and `${VAR}` kept literal unless
//! interpolation is asked for. Where python-dotenv would skip a bad statement with a warning, this
//! parser stops with an error naming the file and line (never the line's text: it may hold a value).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry as MapEntry;
use std::sync::LazyLock;

use ikit_common::secret::SecretValue;
use regex::{Captures, Regex};
use zeroize::Zeroizing;

use crate::MigrateError;

/// Python's `\s` (`str.isspace`) also counts U+001C..U+001F, so python-dotenv's patterns do too.
const SPACE: &str = r"[\s\x1c-\x1f]";
/// Python-dotenv's `[^\S\r\n]`: white space on the same line.
const INLINE_SPACE: &str = r"[[\s\x1c-\x1f]&&[^\r\n]]";

fn anchored(pattern: &str) -> Regex {
    // The patterns are constants exercised by every test of this module.
    Regex::new(&format!("^(?:{pattern})")).expect("dotenv pattern compiles")
}

static BLANK: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("{SPACE}*")));
static INLINE_BLANK: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("{INLINE_SPACE}*")));
static EXPORT: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("(?:export{INLINE_SPACE}+)?")));
static SINGLE_QUOTED_KEY: LazyLock<Regex> = LazyLock::new(|| anchored("'([^']+)'"));
static UNQUOTED_KEY: LazyLock<Regex> = LazyLock::new(|| anchored(r"([^=#\s\x1c-\x1f]+)"));
static EQUAL_SIGN: LazyLock<Regex> = LazyLock::new(|| anchored(&format!("={INLINE_SPACE}*")));
static SINGLE_QUOTED_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(r"'((?:\\'|[^'])*)'"));
static DOUBLE_QUOTED_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(r#""((?:\\"|[^"])*)""#));
static UNQUOTED_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(r"[^\r\n]*"));
static COMMENT: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!("(?:{INLINE_SPACE}*#[^\r\n]*)?")));
static END_OF_LINE: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!(r"{INLINE_SPACE}*(?:\r\n|\n|\r|\z)")));
static TRAILING_COMMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("{SPACE}+#")).expect("dotenv pattern compiles"));
static DOUBLE_QUOTE_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"\\[\\'"abfnrtv]"#).expect("dotenv pattern compiles"));
static SINGLE_QUOTE_ESCAPE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\\[\\']").expect("dotenv pattern compiles"));
static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}").expect("dotenv pattern compiles")
});

fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// One `KEY=value` statement. A key written without `=` has no value (python-dotenv's `None`).
pub struct Entry {
    pub key: String,
    pub value: Option<SecretValue>,
    /// 1-based line on which the statement starts.
    pub line: usize,
}

/// Whether `${NAME}` and `${NAME:-default}` are replaced.
#[derive(Clone, Copy, Default)]
pub enum Interpolation<'a> {
    /// Values are taken literally (the default: `$` in a value is data).
    #[default]
    Off,
    /// Replaced from the values earlier in the file, then from this map (python-dotenv's
    /// `dotenv_values`, where the file wins); an unknown name without default becomes empty.
    On(&'a BTreeMap<String, String>),
}

/// Parses `.env` text. `file` names the source in errors. A key set twice keeps its first position
/// and its last value, as python-dotenv's dict does.
pub fn parse(
    file: &str,
    text: &str,
    interpolation: Interpolation<'_>,
) -> Result<Vec<Entry>, MigrateError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut pos = 0;
    loop {
        pos += match_len(&BLANK, &text[pos..]);
        if pos == text.len() {
            break;
        }
        let line = 1 + text[..pos].matches('\n').count();
        let error = |reason| MigrateError::DotenvSyntax { file: file.to_owned(), line, reason };
        pos += match_len(&EXPORT, &text[pos..]);
        let rest = &text[pos..];
        let key = if rest.starts_with('#') {
            None
        } else {
            let (pattern, reason) = if rest.starts_with('\'') {
                (&*SINGLE_QUOTED_KEY, "unterminated quoted key")
            } else {
                (&*UNQUOTED_KEY, "expected KEY=VALUE")
            };
            let captures = pattern.captures(rest).ok_or_else(|| error(reason))?;
            pos += captures[0].len();
            Some(captures[1].to_owned())
        };
        pos += match_len(&INLINE_BLANK, &text[pos..]);
        let value = if text[pos..].starts_with('=') {
            pos += match_len(&EQUAL_SIGN, &text[pos..]);
            let (value, used) = parse_value(&text[pos..]).map_err(error)?;
            pos += used;
            Some(value)
        } else {
            None
        };
        pos += match_len(&COMMENT, &text[pos..]);
        let end = END_OF_LINE
            .find(&text[pos..])
            .ok_or_else(|| error("unexpected text after the value"))?;
        pos += end.len();
        let Some(key) = key else { continue };
        let value = match (value, interpolation) {
            (Some(raw), Interpolation::On(env)) => Some(interpolate(&raw, &entries, &index, env)),
            (value, _) => value.map(|raw| SecretValue::new(raw.as_str())),
        };
        match index.entry(key.clone()) {
            MapEntry::Occupied(slot) => entries[*slot.get()].value = value,
            MapEntry::Vacant(slot) => {
                slot.insert(entries.len());
                entries.push(Entry { key, value, line });
            }
        }
    }
    Ok(entries)
}

fn match_len(pattern: &Regex, text: &str) -> usize {
    pattern.find(text).map_or(0, |found| found.len())
}

/// Reads one value at the start of `text`; returns it and the bytes used.
fn parse_value(text: &str) -> Result<(Zeroizing<String>, usize), &'static str> {
    let quoted = |pattern: &Regex, escapes: &Regex, reason| {
        let captures = pattern.captures(text).ok_or(reason)?;
        let decoded = escapes.replace_all(&captures[1], |escape: &Captures<'_>| {
            decode_escape(&escape[0]).to_owned()
        });
        Ok((Zeroizing::new(decoded.into_owned()), captures[0].len()))
    };
    match text.chars().next() {
        Some('\'') => {
            quoted(&SINGLE_QUOTED_VALUE, &SINGLE_QUOTE_ESCAPE, "unterminated single-quoted value")
        }
        Some('"') => {
            quoted(&DOUBLE_QUOTED_VALUE, &DOUBLE_QUOTE_ESCAPE, "unterminated double-quoted value")
        }
        None | Some('\r' | '\n') => Ok((Zeroizing::new(String::new()), 0)),
        Some(_) => {
            let raw = UNQUOTED_VALUE.find(text).map_or("", |found| found.as_str());
            let kept = TRAILING_COMMENT.find(raw).map_or(raw, |comment| &raw[..comment.start()]);
            let value = kept.trim_end_matches(is_python_space);
            Ok((Zeroizing::new(value.to_owned()), raw.len()))
        }
    }
}

fn decode_escape(escape: &str) -> &'static str {
    match escape.as_bytes().get(1) {
        Some(b'\\') => "\\",
        Some(b'\'') => "'",
        Some(b'"') => "\"",
        Some(b'a') => "\u{7}",
        Some(b'b') => "\u{8}",
        Some(b'f') => "\u{c}",
        Some(b'n') => "\n",
        Some(b'r') => "\r",
        Some(b't') => "\t",
        _ => "\u{b}",
    }
}

fn interpolate(
    raw: &str,
    earlier: &[Entry],
    index: &BTreeMap<String, usize>,
    env: &BTreeMap<String, String>,
) -> SecretValue {
    let expanded = VARIABLE.replace_all(raw, |variable: &Captures<'_>| {
        let name = &variable["name"];
        let from_file = index.get(name).map(|&at| {
            earlier[at].value.as_ref().map_or(String::new(), |value| value.expose().to_owned())
        });
        from_file
            .or_else(|| env.get(name).cloned())
            .or_else(|| variable.name("default").map(|default| default.as_str().to_owned()))
            .unwrap_or_default()
    });
    SecretValue::new(Zeroizing::new(expanded.into_owned()).as_str())
}

/// Writes `KEY="value"` (no line ending) so that [`parse`], like python-dotenv without
/// interpolation, reads back exactly `value`: quotes, `$`, backslashes, line breaks, unicode and
/// surrounding spaces included.
///
/// One family of values has no such spelling: python-dotenv lets `\"` continue a double-quoted value
/// (and `\'` a single-quoted one), so a quoted value ending in a backslash would run on into the next
/// quote in the file. Such a value is written unquoted when it can be (one line, no surrounding
/// space, no ` #`, no leading quote); otherwise it is refused with an error naming the key.
pub fn quote(key: &str, value: &str) -> Result<String, MigrateError> {
    let key_ok = !key.is_empty()
        && !key.starts_with('\'')
        && !key.chars().any(|c| c == '=' || c == '#' || is_python_space(c));
    if !key_ok {
        return Err(MigrateError::DotenvKey { key: key.to_owned() });
    }
    if !value.ends_with('\\') {
        let mut line = String::with_capacity(key.len() + value.len() + 3);
        line.push_str(key);
        line.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => line.push_str("\\\\"),
                '"' => line.push_str("\\\""),
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                other => line.push(other),
            }
        }
        line.push('"');
        return Ok(line);
    }
    let unquoted_ok = !value.contains(['\r', '\n'])
        && !value.starts_with(['\'', '"'])
        && !value.starts_with(is_python_space)
        && !TRAILING_COMMENT.is_match(value);
    if unquoted_ok {
        Ok(format!("{key}={value}"))
    } else {
        Err(MigrateError::DotenvUnrepresentable { key: key.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(text: &str) -> Vec<(String, Option<String>)> {
        parse(".env", text, Interpolation::Off)
            .unwrap_or_else(|error| panic!("parse failed: {error}"))
            .into_iter()
            .map(|entry| (entry.key, entry.value.map(|v| v.expose().to_owned())))
            .collect()
    }

    fn one(text: &str) -> String {
        let parsed = values(text);
        assert_eq!(parsed.len(), 1, "expected one entry in {text:?}");
        parsed[0].1.clone().unwrap_or_default()
    }

    #[test]
    fn every_corner_of_the_dialect() {
        let text = "\
# a comment line
export EXPORTED=yes
PLAIN=hello world   # trailing comment
HASH_IN_VALUE=a#b
SINGLE='it\\'s raw \\n ${HOME}'
DOUBLE=\"tab\\there \\\"q\\\" back\\\\slash \\x kept\"
MULTI=\"line one
line two\"
EMPTY=
SPACED =   padded value
'QUOTED KEY'=1
NO_VALUE
LITERAL=${HOME}/x
";
        let parsed = values(text);
        let get = |key: &str| {
            parsed
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} missing"))
                .1
                .clone()
        };
        assert_eq!(get("EXPORTED").as_deref(), Some("yes"));
        assert_eq!(get("PLAIN").as_deref(), Some("hello world"));
        assert_eq!(get("HASH_IN_VALUE").as_deref(), Some("a#b"));
        assert_eq!(get("DOUBLE").as_deref(), Some("tab\there \"q\" back\\slash \\x kept"));
        assert_eq!(get("MULTI").as_deref(), Some("line one\nline two"));
        assert_eq!(get("EMPTY").as_deref(), Some(""));
        assert_eq!(get("SPACED").as_deref(), Some("padded value"));
        assert_eq!(get("QUOTED KEY").as_deref(), Some("1"));
        assert_eq!(get("NO_VALUE"), None);
        assert_eq!(get("LITERAL").as_deref(), Some("${HOME}/x"));
        assert_eq!(get("SINGLE").as_deref(), Some("it's raw \\n ${HOME}"));
    }

    #[test]
    fn single_quotes_decode_only_backslash_and_quote() {
        assert_eq!(one(r"A='a\\b\'c\nd'"), "a\\b'c\\nd");
    }

    #[test]
    fn later_assignment_wins_in_first_position() {
        let parsed = values("A=1\nB=2\nA=3\n");
        assert_eq!(parsed[0], ("A".to_owned(), Some("3".to_owned())));
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn interpolation_uses_earlier_values_then_the_env_map_then_defaults() {
        let env = BTreeMap::from([("HOST".to_owned(), "db".to_owned())]);
        let text = "USER=admin\nURL=${USER}@${HOST}:${PORT:-5432}/${MISSING}\n";
        let parsed = parse(".env", text, Interpolation::On(&env)).expect("parses");
        let url = parsed[1].value.as_ref().expect("has value");
        assert_eq!(url.expose(), "admin@db:5432/");
    }

    #[test]
    fn a_bad_line_names_file_and_line_and_not_the_value() {
        let text = "OK=1\n\n# comment\nBROKEN=\"s3cr3t-value\n";
        let error = parse("config/.env", text, Interpolation::Off)
            .err()
            .expect("unterminated quote is an error")
            .to_string();
        assert_eq!(error, "config/.env:4: unterminated double-quoted value");
        assert!(!error.contains("s3cr3t"));

        let error = parse("x.env", "A=\"v\" trailing-s3cr3t\n", Interpolation::Off)
            .err()
            .expect("text after a quoted value is an error")
            .to_string();
        assert_eq!(error, "x.env:1: unexpected text after the value");

        let error = parse("y.env", "A=1\n=s3cr3t\n", Interpolation::Off)
            .err()
            .expect("a missing key is an error")
            .to_string();
        assert_eq!(error, "y.env:2: expected KEY=VALUE");
    }

    #[test]
    fn quoting_round_trips_the_troublesome_values() {
        for value in [
            "",
            "plain",
            " leading and trailing ",
            "quotes ' and \" mixed",
            "dollar $HOME ${HOME} $(cmd) `tick`",
            "back\\slash and \\\" and \\n literal",
            "multi\nline\r\nvalue",
            "unicode é ✓ 🦀",
            "hash # not a comment",
            "ends with backslash\\",
            "C:\\path\\",
        ] {
            let line = quote("KEY", value).expect("representable");
            let file = format!("{line}\nNEXT=\"after\"\nOTHER='x'\n");
            let parsed = values(&file);
            assert_eq!(parsed[0].1.as_deref(), Some(value), "line {line:?}");
            assert_eq!(parsed[1].1.as_deref(), Some("after"));
        }
    }

    #[test]
    fn quoting_refuses_what_python_dotenv_cannot_read_back() {
        let error = quote("KEY", "two\nlines\\").expect_err("refused");
        assert_eq!(
            error.to_string(),
            "the value of \"KEY\" ends with a backslash and needs quoting; python-dotenv cannot read it back"
        );
        assert!(quote("BAD KEY", "v").is_err());
        assert!(quote("A=B", "v").is_err());
        assert!(quote("'Q", "v").is_err());
    }

    fn troublesome_value() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("\\".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("$".to_owned()),
            Just("${X}".to_owned()),
            Just("\n".to_owned()),
            Just("\r".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("#".to_owned()),
            Just("=".to_owned()),
            Just("\u{a0}".to_owned()),
            Just("\u{1c}".to_owned()),
            Just("é🦀".to_owned()),
            "[a-z]{1,3}",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(pieces, 0..12).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn parse_of_quote_is_identity(a in troublesome_value(), b in troublesome_value(), c in troublesome_value()) {
            let mut lines = Vec::new();
            let mut expected = Vec::new();
            for (key, value) in [("A", &a), ("B", &b), ("C", &c)] {
                match quote(key, value) {
                    Ok(line) => {
                        lines.push(line);
                        expected.push((key.to_owned(), Some(value.clone())));
                    }
                    Err(MigrateError::DotenvUnrepresentable { .. }) => {
                        prop_assert!(value.ends_with('\\'));
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                }
            }
            let file = lines.join("\n");
            prop_assert_eq!(values(&file), expected);
        }
    }
}
