//! The grammar of a shared-listeners host's `lb/<host>/_flipbit/nodes.conf`
//! (`templates/nginx-nodes.conf.tera`, rendered by `render::map::host_files`): the two node
//! variables, `$flipbit_node_rr` then `$flipbit_node_hash`, either as empty `map`s (no eligible
//! node) or as `split_clients` of `<share>% <node>;` lines closed by `* <node>;`. A share is
//! written as the renderer's `percent()` writes it and they add up to less than 100%, so nginx
//! never sees a share list it would read differently.

use std::net::IpAddr;

use super::lines::{Directive, Line, Lines, expect, quote};
use super::values::ip;
use super::{Checked, Refusal};

/// `split_clients` shares are hundredths of a percent, as the renderer writes them.
const SHARE_UNITS: usize = 10_000;

/// The two variables' block headers: empty maps, or split_clients.
const EMPTY: [&str; 2] = ["map $protocol $flipbit_node_rr {", "map $protocol $flipbit_node_hash {"];
const SPLIT: [&str; 2] = [
    "split_clients \"$remote_addr$remote_port\" $flipbit_node_rr {",
    "split_clients \"$remote_addr\" $flipbit_node_hash {",
];

/// Checks `nodes.conf`, which binds nothing.
pub(super) fn check(text: &str) -> Result<Checked, Refusal> {
    let mut lines = Lines::new(text)?;
    let first = lines
        .next_after_gaps()
        .ok_or_else(|| lines.ended("the node variables"))?;
    let headers = if first.text == EMPTY[0] {
        EMPTY
    } else if first.text == SPLIT[0] {
        SPLIT
    } else {
        return Err(first.refuse(format!(
            "expected `{}` or `{}`, found {}",
            EMPTY[0],
            SPLIT[0],
            quote(first.text)
        )));
    };
    for (i, header) in headers.iter().enumerate() {
        if i > 0 {
            lines.expect_top(header)?;
        }
        let (body, close) = lines.block("node variable")?;
        if headers == EMPTY {
            expect(&body, 0, "default \"\"", close)?;
            if let Some(d) = body.get(1) {
                return Err(d.line.refuse("an empty node variable holds only `default \"\";`"));
            }
        } else {
            shares(&body, close)?;
        }
    }
    if let Some(line) = lines.next_after_gaps() {
        return Err(line.refuse(format!(
            "nothing follows the two node variables, found {}",
            quote(line.text)
        )));
    }
    Ok(Checked::default())
}

/// `<share>% <node>;` lines, then `* <node>;`, the shares adding up to less than 100%.
fn shares(body: &[Directive<'_>], close: Line<'_>) -> Result<(), Refusal> {
    let Some((last, rest)) = body.split_last() else {
        return Err(close.refuse("a split_clients without nodes"));
    };
    let mut total = 0;
    for d in rest {
        let [share, node] = d.words[..] else {
            return Err(d.line.refuse("expected `<share>% <node>;`"));
        };
        total += units(share).ok_or_else(|| {
            d.line
                .refuse(format!("{} is not a share such as 0.2% or 33.33%", quote(share)))
        })?;
        if total >= SHARE_UNITS {
            return Err(d.line.refuse("the shares reach 100% before the closing `*` line"));
        }
        node_ip(node).map_err(|e| d.line.refuse(e))?;
    }
    let ["*", node] = last.words[..] else {
        return Err(last.line.refuse("the last node line is `* <node>;`"));
    };
    node_ip(node).map_err(|e| last.line.refuse(e))?;
    Ok(())
}

/// The hundredths of a percent of `share`, only when written as the renderer writes them
/// (`percent()`: `1%`, `0.2%`, `33.33%`, no trailing zero) and below 100%.
fn units(share: &str) -> Option<usize> {
    let number = share.strip_suffix('%')?;
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || whole.len() > 2
        || frac.len() > 2
        || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let units = whole.parse::<usize>().ok()? * 100 + format!("{frac:0<2}").parse::<usize>().ok()?;
    (units > 0 && percent(units) == share).then_some(units)
}

/// `units` hundredths of a percent as `render::map`'s `percent()` writes them.
fn percent(units: usize) -> String {
    let text = format!("{}.{:02}", units / 100, units % 100);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A node: an IPv4 address, or a bracketed IPv6 one, as the renderer writes them.
fn node_ip(token: &str) -> Result<IpAddr, String> {
    match token.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(v6) => ip(v6).ok().filter(IpAddr::is_ipv6),
        None => ip(token).ok().filter(IpAddr::is_ipv4),
    }
    .ok_or_else(|| format!("{} is not a node address (IPv4, or IPv6 in brackets)", quote(token)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_refused, node};
    use super::*;
    use crate::render::map::host_files;

    const EMPTY_FILE: &str = "# Flipbit: nodes.\n\nmap $protocol $flipbit_node_rr {\n    default \"\";\n}\n\nmap $protocol $flipbit_node_hash {\n    default \"\";\n}\n";
    const SPLIT_FILE: &str = "# Flipbit: nodes.\n\nsplit_clients \"$remote_addr$remote_port\" $flipbit_node_rr {\n    50% 10.0.0.1;\n    * [fd00::1];\n}\n\nsplit_clients \"$remote_addr\" $flipbit_node_hash {\n    0.2% 10.0.0.1;\n    33.33% [fd00::1];\n    * 10.0.0.1;\n}\n";

    #[test]
    fn accepts_what_the_renderer_writes() {
        let nodes = [node("10.0.0.1"), node("fd00:9::1"), node("10.0.0.1"), node("10.0.0.7")];
        let host = "lb-1".parse().expect("host");
        for n in 0..=nodes.len() {
            let refs: Vec<_> = nodes[..n].iter().collect();
            let files = host_files(&host, &Default::default(), &refs).expect("render");
            assert_eq!(check(&files[1].1), Ok(Checked::default()), "{}", files[1].1);
        }
        assert!(check(EMPTY_FILE).is_ok() && check(SPLIT_FILE).is_ok());
        for (share, want) in [
            ("1%", Some(100)),
            ("0.2%", Some(20)),
            ("33.33%", Some(3333)),
            ("0.01%", Some(1)),
        ] {
            assert_eq!(units(share), want, "{share}");
        }
        for bad in [
            "1.0%",
            "0.20%",
            "01%",
            "100%",
            "0%",
            ".5%",
            "1.%",
            "1",
            "+1%",
            "1.005%",
            "99999999999999999999%",
        ] {
            assert_eq!(units(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_anything_else() {
        let r = |from: &str, to: &str| SPLIT_FILE.replacen(from, to, 1);
        let e = |from: &str, to: &str| EMPTY_FILE.replacen(from, to, 1);
        let table: Vec<(String, usize, &str)> = vec![
            (
                e("    default \"\";", "    default \"\";\n    include /etc/passwd;"),
                5,
                "holds only `default",
            ),
            (e("    default \"\";", "    default 127.0.0.1;"), 4, "arguments differ"),
            (
                e("$flipbit_node_hash", "$flipbit_upstream"),
                7,
                "expected `map $protocol $flipbit_node_hash {`",
            ),
            (format!("{EMPTY_FILE}include /etc/passwd;\n"), 10, "nothing follows"),
            (
                r("split_clients \"$remote_addr\"", "map $protocol"),
                8,
                "expected `split_clients",
            ),
            (format!("{}{}", EMPTY_FILE, &SPLIT_FILE[18..]), 11, "nothing follows"),
            (
                r("    50% 10.0.0.1;", "    50% 10.0.0.1;\n    access_log /tmp/x;"),
                5,
                "\"access_log\" is not a share",
            ),
            (
                r("    50% 10.0.0.1;", "    50.0% 10.0.0.1;"),
                4,
                "\"50.0%\" is not a share",
            ),
            (
                r("    50% 10.0.0.1;", "    60% 10.0.0.1;\n    40% 10.0.0.2;"),
                5,
                "reach 100%",
            ),
            (
                r("    50% 10.0.0.1;", "    50% 10.0.0.1:22;"),
                4,
                "\"10.0.0.1:22\" is not a node",
            ),
            (
                r("    50% 10.0.0.1;", "    50% fd00::2;"),
                4,
                "\"fd00::2\" is not a node",
            ),
            (
                r("    50% 10.0.0.1;", "    50% [10.0.0.1];"),
                4,
                "\"[10.0.0.1]\" is not a node",
            ),
            (r("    * [fd00::1];", "    * [fd00::1] x;"), 5, "the last node line"),
            (r("    * [fd00::1];", "    50% [fd00::1];"), 5, "the last node line"),
            (r("    50% 10.0.0.1;\n    * [fd00::1];\n", ""), 4, "without nodes"),
            (
                r("    * 10.0.0.1;", "    * 10.0.0.1; include /etc/passwd;"),
                11,
                "one directive per line",
            ),
            (SPLIT_FILE.replace('\n', "\r\n"), 1, "'\\r'"),
            (
                "# only a comment\n".to_owned(),
                1,
                "the file ends where the node variables",
            ),
        ];
        assert_refused(table, check);
    }
}
