//! The values inside the generated files, accepted only when written exactly as the renderer
//! writes them (`Display` of the parsed value gives the token back), so no second spelling of an
//! address or a port can slip past a comparison; and the two rules on values that hold across
//! lines: bound addresses lie in the host's pools, and every port of a Service is rendered alike.

use std::net::{IpAddr, SocketAddr};

use super::Refusal;
use super::lines::{Line, quote};
use crate::config::LbHost;

/// A port as the renderers write it: decimal, no sign or leading zero, 1 to 65535.
pub(super) fn port(token: &str) -> Result<u16, String> {
    match token.parse::<u16>() {
        Ok(p) if p != 0 && p.to_string() == token => Ok(p),
        _ => Err(format!("{} is not a port number from 1 to 65535", quote(token))),
    }
}

/// An address as `IpAddr`'s `Display` writes it (IPv6 compressed, lowercase, unbracketed).
pub(super) fn ip(token: &str) -> Result<IpAddr, String> {
    match token.parse::<IpAddr>() {
        Ok(a) if a.to_string() == token => Ok(a),
        _ => Err(format!("{} is not an address as the generator writes it", quote(token))),
    }
}

/// `<address>:<port>` as `SocketAddr`'s `Display` writes it (IPv6 bracketed, no scope id).
pub(super) fn socket(token: &str) -> Result<SocketAddr, String> {
    match token.parse::<SocketAddr>() {
        Ok(SocketAddr::V6(a)) if a.scope_id() != 0 || a.flowinfo() != 0 => Err(format!(
            "{} has a scope id or flow label, which the generator never writes",
            quote(token)
        )),
        Ok(a) if a.to_string() == token && a.port() != 0 => Ok(a),
        _ => Err(format!(
            "{} is not <address>:<port> as the generator writes it",
            quote(token)
        )),
    }
}

/// Refuses an address the load balancer would bind outside the host's pools.
pub(super) fn in_pools(host: &LbHost, ip: IpAddr, line: Line<'_>) -> Result<(), Refusal> {
    if host.in_pools(ip) {
        Ok(())
    } else {
        Err(line.refuse(format!("address {ip} is outside LB host {}'s pools", host.name)))
    }
}

/// Holds what the first route of a file rendered for a value the generator renders alike for
/// every port of a Service (balance, PROXY protocol, addresses, nodes), and refuses a route that
/// differs: only a hand edit makes one port unlike the others.
pub(super) fn alike<T: PartialEq>(first: &mut Option<T>, this: T, line: Line<'_>, what: &str) -> Result<(), Refusal> {
    match first {
        Some(f) if *f != this => Err(line.refuse(format!(
            "{what}: not as for the first port; the generator renders every port of a Service alike"
        ))),
        Some(_) => Ok(()),
        None => {
            *first = Some(this);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_must_be_written_as_the_renderers_write_them() {
        assert_eq!(port("80"), Ok(80));
        for bad in ["0", "080", "+80", "65536", "8 0", "", "x"] {
            assert!(port(bad).is_err(), "{bad:?}");
        }
        assert!(ip("fd00::5").is_ok() && ip("127.1.1.5").is_ok());
        for bad in ["FD00::5", "fd00:0::5", "[fd00::5]", "127.1.1.05", "127.1.1"] {
            assert!(ip(bad).is_err(), "{bad:?}");
        }
        assert!(socket("[fd00::5]:80").is_ok() && socket("127.1.1.5:80").is_ok());
        for bad in [
            "fd00::5:80",
            "[fe80::1%2]:80",
            "127.1.1.5:0",
            "127.1.1.5:080",
            "127.1.1.5",
            "[FD00::5]:80",
        ] {
            assert!(socket(bad).is_err(), "{bad:?}");
        }
    }
}
