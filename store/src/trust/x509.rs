//! Just enough of an X.509 certificate (DER) to say why a Git server's certificate was refused:
//! who it names, who issued it, when it is valid and for which names. OpenSSL has already judged
//! it by then (inside libgit2); this only reads, it never decides.

use jiff::Timestamp;

/// What a refusal quotes from the server's certificate. The strings come from the server: they
/// are printed through `flipbit_core::text::escaped`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaf {
    /// `CN=...` (or `O=...` when there is no common name).
    pub subject: String,
    pub issuer: String,
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
    /// Subject alternative names: `DNS:...`, `IP:...`.
    pub names: Vec<String>,
}

/// `None` when `der` is not a certificate this reader understands.
pub fn parse(der: &[u8]) -> Option<Leaf> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let mut next = || -> Option<(u8, &[u8])> {
        let (tag, value, tail) = tlv(rest)?;
        rest = tail;
        Some((tag, value))
    };
    let (mut tag, _) = next()?;
    if tag == 0xa0 {
        (tag, _) = next()?; // the version, then the serial number
    }
    if tag != 0x02 {
        return None;
    }
    let _algorithm = next()?;
    let issuer = name(next()?.1);
    let (_, validity) = next()?;
    let subject = name(next()?.1);
    let _key = next()?;
    let (not_before, not_after) = times(validity);
    let mut names = Vec::new();
    while let Some((tag, value)) = next() {
        if tag == 0xa3 {
            names = alt_names(value).unwrap_or_default();
        }
    }
    Some(Leaf {
        subject,
        issuer,
        not_before,
        not_after,
        names,
    })
}

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, tail) = rest.split_at_checked(count)?;
        rest = tail;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    let (value, tail) = rest.split_at_checked(len)?;
    Some((tag, value, tail))
}

/// Iterates over the elements of a SEQUENCE's or SET's contents.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, value, rest) = tlv(input)?;
        input = rest;
        Some((tag, value))
    })
}

const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// `CN=...` from a Name (SEQUENCE of SETs of (OID, value)), else `O=...`, else `(no name)`.
fn name(der: &[u8]) -> String {
    let mut found: [Option<String>; 2] = [None, None];
    for (_, set) in elements(der) {
        for (_, pair) in elements(set) {
            let mut parts = elements(pair);
            let (Some((0x06, oid)), Some((_, value))) = (parts.next(), parts.next()) else {
                continue;
            };
            let text = String::from_utf8_lossy(value).into_owned();
            match oid {
                COMMON_NAME => found[0] = Some(format!("CN={text}")),
                ORGANIZATION => found[1] = Some(format!("O={text}")),
                _ => {}
            }
        }
    }
    let [cn, o] = found;
    cn.or(o).unwrap_or_else(|| "(no name)".into())
}

fn times(validity: &[u8]) -> (Option<Timestamp>, Option<Timestamp>) {
    let mut parts = elements(validity).map(|(tag, value)| time(tag, value));
    (parts.next().flatten(), parts.next().flatten())
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, value: &[u8]) -> Option<Timestamp> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let full = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy < 50 { "20" } else { "19" })
        }
        (0x18, 14) => text.to_owned(),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| full.get(range)?.parse::<i16>().ok();
    let (y, mo, d) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (h, mi, s) = (field(8..10)?, field(10..12)?, field(12..14)?);
    let civil = jiff::civil::DateTime::new(y, mo as i8, d as i8, h as i8, mi as i8, s as i8, 0).ok()?;
    civil.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The subjectAltName extension's DNS names and IP addresses, from `[3] { SEQUENCE OF Extension }`.
fn alt_names(extensions: &[u8]) -> Option<Vec<String>> {
    let (_, list, _) = tlv(extensions)?;
    for (_, extension) in elements(list) {
        let mut parts = elements(extension);
        if parts.next() != Some((0x06, SUBJECT_ALT_NAME)) {
            continue;
        }
        // An optional `critical` BOOLEAN, then the OCTET STRING holding the names.
        let (_, octets) = parts.find(|(tag, _)| *tag == 0x04)?;
        let (_, names, _) = tlv(octets)?;
        return Some(
            elements(names)
                .filter_map(|(tag, value)| match (tag, value.len()) {
                    (0x82, _) => Some(format!("DNS:{}", String::from_utf8_lossy(value))),
                    (0x87, 4) => Some(format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from([value[0], value[1], value[2], value[3]])
                    )),
                    (0x87, 16) => {
                        let bytes: [u8; 16] = value.try_into().ok()?;
                        Some(format!("IP:{}", std::net::Ipv6Addr::from(bytes)))
                    }
                    _ => None,
                })
                .collect(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl x509 -outform der` of a server certificate made as tests/src/githttp.rs makes
    /// one: CN "Flipbit test server", issued by CN "Flipbit test CA", SANs IP:127.0.0.1 and
    /// DNS:localhost.
    const SERVER_DER_BASE64: &str = include_str!("test-server-cert.b64");

    #[test]
    fn reads_names_validity_and_alt_names() {
        use base64::Engine as _;
        let compact: String = SERVER_DER_BASE64.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD.decode(compact).unwrap();
        let leaf = parse(&der).expect("the certificate parses");
        assert_eq!(leaf.subject, "CN=Flipbit test server");
        assert_eq!(leaf.issuer, "CN=Flipbit test CA");
        assert_eq!(leaf.names, ["IP:127.0.0.1", "DNS:localhost"]);
        let (from, until) = (leaf.not_before.unwrap(), leaf.not_after.unwrap());
        assert!(
            from < until && until.as_second() - from.as_second() == 2 * 86_400,
            "{from} {until}"
        );
        assert_eq!(parse(&der[..der.len() / 2]), None, "a truncated certificate");
        assert_eq!(parse(b"not a certificate"), None);
    }

    #[test]
    fn times_in_both_forms() {
        assert_eq!(
            time(0x17, b"491231235959Z").unwrap().to_string(),
            "2049-12-31T23:59:59Z"
        );
        assert_eq!(
            time(0x17, b"500101000000Z").unwrap().to_string(),
            "1950-01-01T00:00:00Z"
        );
        assert_eq!(
            time(0x18, b"20991231235959Z").unwrap().to_string(),
            "2099-12-31T23:59:59Z"
        );
        assert_eq!(time(0x18, b"2099123123595Z"), None);
    }
}
