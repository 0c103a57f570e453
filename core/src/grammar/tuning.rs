//! The lines output format 2 adds to a Service's files for what it asks of its traffic
//! (`crate::traffic`): client ranges, timeouts of its own, UDP answers per session. Each value is
//! read back as the renderer writes it, within the bounds the generator accepts, so a hand edit
//! cannot widen what `traffic` validated (or slip in a second directive through a value).

use ipnet::IpNet;

use super::lines::quote;
use crate::traffic::{CONNECT_TIMEOUT_RANGE, IDLE_TIMEOUT_RANGE, UDP_RESPONSES_RANGE};

/// A client range as the renderer writes it: a CIDR with its host bits cleared.
pub(super) fn range(token: &str) -> Result<IpNet, String> {
    match token.parse::<IpNet>() {
        Ok(net) if net.to_string() == token && net.trunc() == net => Ok(net),
        _ => Err(format!(
            "{} is not a client range as the generator writes it",
            quote(token)
        )),
    }
}

/// `<n>s`, the seconds of a Service's own timeout, within `(min, max)`.
fn seconds(token: &str, (min, max): (u32, u32), what: &str) -> Result<u32, String> {
    let n = token
        .strip_suffix('s')
        .and_then(|n| n.parse::<u32>().ok().filter(|v| v.to_string() == n));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{} is not a {what} of {min}s to {max}s", quote(token))),
    }
}

/// A connect timeout: the default `5s`, or (format 2) a Service's own.
pub(super) fn connect_timeout(token: &str, format: u32) -> Result<(), String> {
    if token == "5s" {
        return Ok(());
    }
    if format < 2 {
        return Err(format!(
            "{} is not `5s` (format 1 has no timeouts of a Service's own)",
            quote(token)
        ));
    }
    seconds(token, CONNECT_TIMEOUT_RANGE, "connect timeout").map(drop)
}

/// An idle timeout of a Service's own (format 2).
pub(super) fn idle_timeout(token: &str) -> Result<(), String> {
    seconds(token, IDLE_TIMEOUT_RANGE, "idle timeout").map(drop)
}

/// UDP answers per session (format 2).
pub(super) fn responses(token: &str) -> Result<(), String> {
    let (min, max) = UDP_RESPONSES_RANGE;
    match token.parse::<u32>() {
        Ok(n) if n.to_string() == token && (min..=max).contains(&n) => Ok(()),
        _ => Err(format!(
            "{} is not a number of answers from {min} to {max}",
            quote(token)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_only_as_written_and_within_bounds() {
        assert!(range("203.0.113.0/24").is_ok() && range("2001:db8::/32").is_ok());
        for bad in [
            "203.0.113.5/24",
            "203.0.113.0",
            "all",
            "203.0.113.0/24;",
            "2001:DB8::/32",
        ] {
            assert!(range(bad).is_err(), "{bad}");
        }
        assert!(connect_timeout("5s", 1).is_ok() && connect_timeout("7s", 2).is_ok());
        assert!(connect_timeout("7s", 1).is_err() && connect_timeout("601s", 2).is_err());
        assert!(idle_timeout("300s").is_ok() && idle_timeout("10m").is_err() && idle_timeout("0s").is_err());
        assert!(idle_timeout("030s").is_err());
        assert!(responses("1").is_ok() && responses("0").is_err() && responses("1001").is_err());
    }
}
