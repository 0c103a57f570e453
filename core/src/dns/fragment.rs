//! Reads a committed zone fragment back into records: the grammar of what
//! [`crate::render::zone::fragment`] writes, kept next to the DNS rules it relies on. The applier
//! trusts Git no more than nginx does: the fragment must be the plain form the generator writes
//! (`<name>. <ttl> IN A|AAAA <address>`, comments, blank lines), every name inside the
//! fragment's zone, or it is refused with its line number.

use std::net::IpAddr;

use super::AddressRecord;

/// Parses `text`, the fragment of a Service in `zone`.
pub fn parse(zone: &str, text: &str) -> Result<Vec<AddressRecord>, String> {
    let mut out = Vec::new();
    let suffix = format!(".{zone}");
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fail = |why: &str| format!("line {}: {why}: {raw:?}", i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, ttl, class, rtype, address] = fields.as_slice() else {
            return Err(fail("expected `<name>. <ttl> IN A|AAAA <address>`"));
        };
        let name = name
            .strip_suffix('.')
            .ok_or_else(|| fail("the name must be absolute (end with a dot)"))?
            .to_ascii_lowercase();
        super::check_dns_name(&name).map_err(|e| fail(&e))?;
        if name != zone && !name.ends_with(&suffix) {
            return Err(fail(&format!("{name} is outside the zone {zone}")));
        }
        let ttl: u32 = ttl.parse().map_err(|_| fail("the TTL is not a number"))?;
        if !class.eq_ignore_ascii_case("IN") {
            return Err(fail("only class IN is allowed"));
        }
        let (a, aaaa) = (rtype.eq_ignore_ascii_case("A"), rtype.eq_ignore_ascii_case("AAAA"));
        if !a && !aaaa {
            return Err(fail("only A and AAAA records are allowed"));
        }
        let addr: IpAddr = address.parse().map_err(|_| fail("not an address"))?;
        match (a, addr) {
            (true, IpAddr::V4(_)) | (false, IpAddr::V6(_)) => {}
            _ => return Err(fail("only A (IPv4) and AAAA (IPv6) records are allowed")),
        }
        out.push(AddressRecord { name, ttl, addr });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "k8s.example.test";

    #[test]
    fn reads_what_the_generator_writes() {
        let text = "; comment\nfrontend.blog.k8s.example.test. 300 IN A 127.1.1.1\n\nFrontend.blog.k8s.example.test. 60 in AAAA ::1 ; lb-9\n";
        let got = parse(ZONE, text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].name, "frontend.blog.k8s.example.test");
        assert_eq!(got[1].ttl, 60);
        assert_eq!(got[1].addr, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn refuses_anything_else_with_the_line() {
        for (bad, why) in [
            ("x.k8s.example.test. 300 IN CNAME y.\n", "only A"),
            ("x.k8s.example.test 300 IN A 127.0.0.1\n", "absolute"),
            ("x.other.test. 300 IN A 127.0.0.1\n", "outside the zone"),
            ("x.k8s.example.test. 300 IN A ::1\n", "only A"),
            ("x.k8s.example.test. IN A 127.0.0.1\n", "expected"),
            ("x_y.k8s.example.test. 300 IN A 127.0.0.1\n", "not a DNS name"),
        ] {
            let err = parse(ZONE, &format!("; ok\n{bad}")).unwrap_err();
            assert!(err.starts_with("line 2:") && err.contains(why), "{bad}: {err}");
        }
    }
}
