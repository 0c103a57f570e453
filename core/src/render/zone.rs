//! A Service's zone fragment (`templates/dns-service.zone.tera`); `crate::dns::fragment` reads it
//! back.

use std::net::IpAddr;

use serde::Serialize;

use super::{RenderError, render};
use crate::exposure::ExposedService;

#[derive(Serialize)]
struct ZoneView {
    service: String,
    zone: String,
    records: Vec<RecordView>,
}

#[derive(Serialize)]
struct RecordView {
    name: String,
    ttl: u32,
    rtype: &'static str,
    address: String,
}

/// The zone fragment of one Service: an A or AAAA record per name per LB address. `names` were
/// validated as DNS names inside `zone`.
pub fn fragment(
    svc: &ExposedService,
    zone: &str,
    names: &std::collections::BTreeSet<String>,
    ttl: u32,
    addresses: &[IpAddr],
) -> Result<String, RenderError> {
    let mut ips: Vec<IpAddr> = addresses.to_vec();
    ips.sort();
    let records = names
        .iter()
        .flat_map(|name| {
            ips.iter().map(move |ip| RecordView {
                name: name.clone(),
                ttl,
                rtype: if ip.is_ipv4() { "A" } else { "AAAA" },
                address: ip.to_string(),
            })
        })
        .collect();
    let view = ZoneView {
        service: svc.key.to_string(),
        zone: zone.to_owned(),
        records,
    };
    render(super::DNS_SERVICE, &view)
}
