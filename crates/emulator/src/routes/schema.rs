//! Request-body checks shaped like the server's zod schemas: every failing field is reported as
//! one zod issue (`code`, `expected`, `received`, `path`, `message`), all at once, before the
//! body is deserialised. Keeps the issue text out of serde's messages.

use serde_json::{Value, json};

/// A JSON type as zod names it.
#[derive(Clone, Copy)]
pub(crate) enum Ty {
    Str,
    Num,
    Bool,
    Arr,
    /// An array of objects whose fields are checked too.
    Items(&'static [Field]),
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Num => "number",
            Ty::Bool => "boolean",
            Ty::Arr | Ty::Items(_) => "array",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            Ty::Str => value.is_string(),
            Ty::Num => value.is_number(),
            Ty::Bool => value.is_boolean(),
            Ty::Arr | Ty::Items(_) => value.is_array(),
        }
    }
}

/// One body field: its name, type and whether zod requires it.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

pub(crate) const fn req(name: &'static str, ty: Ty) -> Field {
    Field { name, ty, required: true }
}

pub(crate) const fn opt(name: &'static str, ty: Ty) -> Field {
    Field { name, ty, required: false }
}

/// zod's name for the type of a received value.
fn received(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// The `invalid_type` issue zod reports for `value` at `path` when it wanted `expected`.
pub(crate) fn invalid_type(expected: &str, value: Option<&Value>, path: &[Value]) -> Value {
    let got = received(value);
    let message = if value.is_none() {
        "Required".to_owned()
    } else {
        format!("Expected {expected}, received {got}")
    };
    json!({"code": "invalid_type", "expected": expected, "received": got, "path": path, "message": message})
}

/// Every issue of `body` against `fields` (a top-level object is expected).
pub(crate) fn check(body: &Value, fields: &[Field]) -> Vec<Value> {
    let mut issues = Vec::new();
    check_object(body, fields, &[], &mut issues);
    issues
}

fn check_object(body: &Value, fields: &[Field], at: &[Value], issues: &mut Vec<Value>) {
    let Some(map) = body.as_object() else {
        issues.push(invalid_type("object", Some(body), at));
        return;
    };
    for field in fields {
        let mut path = at.to_vec();
        path.push(json!(field.name));
        match map.get(field.name) {
            None if !field.required => {}
            Some(v) if field.ty.accepts(v) => {
                if let (Ty::Items(inner), Value::Array(items)) = (field.ty, v) {
                    for (i, item) in items.iter().enumerate() {
                        let mut item_path = path.clone();
                        item_path.push(json!(i));
                        check_object(item, inner, &item_path, issues);
                    }
                }
            }
            other => issues.push(invalid_type(field.ty.name(), other, &path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: &[Field] = &[req("secretKey", Ty::Str)];

    #[test]
    fn reports_every_failing_field_like_zod() {
        let fields = [req("clientId", Ty::Str), req("clientSecret", Ty::Str), opt("n", Ty::Num)];
        let issues = check(&json!({"clientSecret": 5, "n": null}), &fields);
        assert_eq!(
            issues,
            vec![
                json!({"code": "invalid_type", "expected": "string", "received": "undefined", "path": ["clientId"], "message": "Required"}),
                json!({"code": "invalid_type", "expected": "string", "received": "number", "path": ["clientSecret"], "message": "Expected string, received number"}),
                json!({"code": "invalid_type", "expected": "number", "received": "null", "path": ["n"], "message": "Expected number, received null"}),
            ]
        );
        assert!(check(&json!({"clientId": "a", "clientSecret": "b"}), &fields).is_empty());
    }

    #[test]
    fn a_non_object_body_and_array_items_are_checked() {
        assert_eq!(
            check(&json!("text"), ITEM),
            vec![
                json!({"code": "invalid_type", "expected": "object", "received": "string", "path": [], "message": "Expected object, received string"})
            ]
        );
        let issues = check(&json!({"s": [{"secretKey": "A"}, {}]}), &[req("s", Ty::Items(ITEM))]);
        assert_eq!(issues[0]["path"], json!(["s", 1, "secretKey"]));
        assert_eq!(issues.len(), 1);
    }
}
