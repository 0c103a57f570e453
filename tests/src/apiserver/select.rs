//! `labelSelector` and `fieldSelector`, applied alike to LIST results and watch events. A selector
//! this server cannot evaluate is a 400, never ignored: a client that silently got every object
//! instead of the ones it asked for would pass tests it should fail.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    /// "name" or "namespace" (the `metadata.` fields every resource supports).
    field: &'static str,
    value: String,
    negate: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two terms).
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn bad(what: &str, term: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: invalid {what} {term:?}"))
}

fn key(term: &str, k: &str) -> ApiResult<String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 316
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(bad("label selector", term))
    }
}

fn value(term: &str, v: &str) -> ApiResult<String> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad("label selector", term))
    }
}

fn label_req(term: &str) -> ApiResult<LabelReq> {
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key(term, k)?));
    }
    if let (Some(open), Some(inner)) = (term.find('('), term.strip_suffix(')')) {
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let values = inner[open + 1..]
            .split(',')
            .map(|v| value(term, v))
            .collect::<ApiResult<Vec<_>>>()?;
        return match head.as_slice() {
            [k, "in"] => Ok(LabelReq::In(key(term, k)?, values)),
            [k, "notin"] => Ok(LabelReq::NotIn(key(term, k)?, values)),
            _ => Err(bad("label selector", term)),
        };
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(LabelReq::NotEq(key(term, k)?, value(term, v)?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelReq::Eq(key(term, k)?, value(term, v)?));
    }
    if term.contains(['<', '>', ' ']) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement {term:?}: this test API server supports =, ==, !=, in, notin, key and !key"
        )));
    }
    Ok(LabelReq::Exists(key(term, term)?))
}

fn field_req(term: &str) -> ApiResult<FieldReq> {
    let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
        (f, v, true)
    } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        (f, v, false)
    } else {
        return Err(bad("field selector", term));
    };
    let field = match field.trim() {
        "metadata.name" => "name",
        "metadata.namespace" => "namespace",
        other => {
            return Err(ApiError::bad_request(format!(
                "{other:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            )));
        }
    };
    Ok(FieldReq {
        field,
        value: value.trim().to_string(),
        negate,
    })
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> ApiResult<Self> {
        Ok(Self {
            labels: terms(labels.unwrap_or(""))
                .into_iter()
                .map(label_req)
                .collect::<ApiResult<_>>()?,
            fields: terms(fields.unwrap_or(""))
                .into_iter()
                .map(field_req)
                .collect::<ApiResult<_>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let meta = obj.get("metadata");
        let label = |k: &str| {
            meta.and_then(|m| m.get("labels"))
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let got = meta
                    .and_then(|m| m.get(req.field))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (got == req.value) != req.negate
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_forms() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "x"}}});
        let m = |l: &str| Selector::parse(Some(l), None).unwrap().matches(&obj);
        assert!(m("app=web,tier"));
        assert!(m("app==web, !gone"));
        assert!(!m("app!=web"));
        assert!(m("app in (db, web),tier notin (y)"));
        assert!(!m("!app"));
        assert!(Selector::parse(Some("a>1"), None).is_err());
        let f = |s: &str| Selector::parse(None, Some(s)).map(|s| s.matches(&obj));
        assert!(f("metadata.name=a").unwrap());
        assert!(!f("metadata.namespace!=ns").unwrap());
        assert!(f("spec.type=LoadBalancer").is_err());
    }
}
