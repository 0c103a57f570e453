//! Query strings: decoding (`application/x-www-form-urlencoded`, as clients encode selectors) and
//! the parameters that mean the same on every endpoint (`dryRun`, booleans parsed like Go's
//! `strconv.ParseBool`, the way the real server parses them).

use super::error::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Self { pairs }
    }

    /// The last value of a parameter (as Go's `url.Values.Get` would take the first; clients
    /// never repeat these, so either is fine).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter; absent or empty is false, anything `ParseBool` rejects is a 400.
    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!("invalid boolean {other:?} for {name}"))),
        }
    }

    /// `dryRun=All` means validate and answer, but store nothing.
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {other:?}: only \"All\""
            ))),
        }
    }

    /// `fieldValidation` of a create, update or patch: what the server does with fields its schema
    /// does not know. This server has no schemas, so it cannot find such fields: `Ignore` and
    /// `Warn` (the real default), which never fail a request over them, are served as given
    /// (nothing is dropped, no warning is sent); `Strict`, which promises a 400 for every unknown
    /// field, is refused rather than pretended. kubectl sends `Strict` by default once it finds
    /// OpenAPI documents, which this server does not serve, so kubectl apply/create/replace need
    /// `--validate=false` here (they then send `Ignore`).
    pub fn check_field_validation(&self) -> ApiResult<()> {
        match self.get("fieldValidation") {
            None | Some("" | "Ignore" | "Warn") => Ok(()),
            Some("Strict") => Err(ApiError::bad_request(
                "fieldValidation=Strict is not implemented by this test API server: it has no schemas to find \
                 unknown fields with (kubectl: --validate=false sends Ignore)",
            )),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// A non-negative integer parameter.
    pub fn number(&self, name: &str) -> ApiResult<Option<u64>> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid {name} {v:?}: not a non-negative integer"))),
        }
    }

    /// `resourceVersion` as a number; None for absent, empty or "0" ("any version").
    pub fn resource_version(&self) -> ApiResult<Option<u64>> {
        match self.get("resourceVersion") {
            None | Some("") | Some("0") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors() {
        let q = Query::parse("labelSelector=a%3Db%2C%21c&x=a+b&watch=1&bad=%zz");
        assert_eq!(q.get("labelSelector"), Some("a=b,!c"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert!(q.flag("watch").unwrap());
        assert!(Query::parse("watch=yes").flag("watch").is_err());
        assert!(Query::parse("fieldValidation=Ignore").check_field_validation().is_ok());
        assert!(Query::parse("fieldManager=kubectl").check_field_validation().is_ok());
        assert_eq!(
            Query::parse("fieldValidation=Strict")
                .check_field_validation()
                .map_err(|e| e.code),
            Err(400)
        );
        assert!(Query::parse("fieldValidation=strict").check_field_validation().is_err());
    }
}
