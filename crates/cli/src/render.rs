//! Text output of the operations commands, pure: aligned tables, and the `secrets` listing
//! formats. A value reaches the output only where the command was asked to print values; status
//! tables print a mask instead.

use ikit_common::SecretValue;
use serde_json::{Value, json};

/// What `ikit secrets set` shows instead of a value.
pub const MASK: &str = "******";
/// What `ikit secrets get --allow-missing` shows for a key the folder does not hold.
pub const NOT_FOUND: &str = "*not found*";

/// A table with a header row and columns padded to their widest cell (by characters). Cells
/// holding line breaks are shown with `\n` escapes so a row stays one line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let one_line = |s: &str| s.replace('\r', "\\r").replace('\n', "\\n");
    let rows: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|c| one_line(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in &rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// How `ikit secrets` and `ikit secrets get` print what they were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
    Yaml,
    Dotenv,
}

/// One listed secret: key, value, type.
pub struct Listed<'a> {
    pub key: &'a str,
    pub value: &'a SecretValue,
    pub secret_type: &'a str,
}

/// A YAML double-quoted scalar: JSON's string escapes are valid YAML, so every value round-trips.
fn yaml_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Renders a listing. `dotenv` uses the round-tripping quote of the shared dotenv module and
/// fails on a value it cannot spell (naming the key).
pub fn listing(format: ListFormat, items: &[Listed<'_>]) -> Result<String, String> {
    Ok(match format {
        ListFormat::Table => table(
            &["SECRET NAME", "SECRET VALUE", "SECRET TYPE"],
            &items
                .iter()
                .map(|s| {
                    vec![s.key.to_owned(), s.value.expose().to_owned(), s.secret_type.to_owned()]
                })
                .collect::<Vec<_>>(),
        ),
        ListFormat::Json => {
            let list: Vec<Value> = items
                .iter()
                .map(|s| {
                    json!({"secretKey": s.key, "secretValue": s.value.expose(), "type": s.secret_type})
                })
                .collect();
            let mut text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
            text.push('\n');
            text
        }
        ListFormat::Yaml => {
            if items.is_empty() {
                return Ok("[]\n".to_owned());
            }
            let mut out = String::new();
            for s in items {
                out.push_str(&format!("- secretKey: {}\n", yaml_string(s.key)));
                out.push_str(&format!("  secretValue: {}\n", yaml_string(s.value.expose())));
                out.push_str(&format!("  type: {}\n", yaml_string(s.secret_type)));
            }
            out
        }
        ListFormat::Dotenv => {
            let mut out = String::new();
            for s in items {
                let line = ikit_migrate::dotenv::quote(s.key, s.value.expose())
                    .map_err(|e| e.to_string())?;
                out.push_str(&line);
                out.push('\n');
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items<'a>(values: &'a [(&'static str, SecretValue)]) -> Vec<Listed<'a>> {
        values.iter().map(|(k, v)| Listed { key: k, value: v, secret_type: "shared" }).collect()
    }

    #[test]
    fn table_pads_columns_and_keeps_rows_on_one_line() {
        let text = table(
            &["NAME", "STATUS"],
            &[vec!["A_LONG_KEY".into(), "ok".into()], vec!["B".into(), "two\nlines".into()]],
        );
        assert_eq!(text, "NAME        STATUS\nA_LONG_KEY  ok\nB           two\\nlines\n");
    }

    #[test]
    fn json_yaml_and_dotenv_round_trip_troublesome_values() {
        let tricky = "he said \"hi\" it's $HOME\\\nline2 ü ";
        let values = [("A", SecretValue::new(tricky)), ("B", SecretValue::new("plain"))];
        let list = items(&values);

        let json: Value = serde_json::from_str(&listing(ListFormat::Json, &list).unwrap()).unwrap();
        assert_eq!(json[0]["secretKey"], "A");
        assert_eq!(json[0]["secretValue"], tricky);

        let yaml = listing(ListFormat::Yaml, &list).unwrap();
        let line = yaml.lines().find(|l| l.trim_start().starts_with("secretValue:")).unwrap();
        let quoted = line.split_once(": ").unwrap().1;
        let back: String = serde_json::from_str(quoted).unwrap();
        assert_eq!(back, tricky);

        let dotenv = listing(ListFormat::Dotenv, &list).unwrap();
        let parsed =
            ikit_migrate::dotenv::parse("out", &dotenv, ikit_migrate::dotenv::Interpolation::Off)
                .unwrap();
        assert_eq!(parsed[0].key, "A");
        assert_eq!(parsed[0].value.as_ref().unwrap().expose(), tricky);
        assert_eq!(parsed[1].value.as_ref().unwrap().expose(), "plain");
    }

    #[test]
    fn an_empty_listing_is_valid_in_every_format() {
        assert_eq!(listing(ListFormat::Yaml, &[]).unwrap(), "[]\n");
        assert_eq!(listing(ListFormat::Json, &[]).unwrap(), "[]\n");
        assert_eq!(listing(ListFormat::Dotenv, &[]).unwrap(), "");
    }
}
