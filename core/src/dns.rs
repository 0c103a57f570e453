//! DNS names as Flipbit accepts them: lowercase LDH labels, so they are safe in zone text.

/// Checks a DNS name (no trailing dot): dot-separated RFC 1123 labels, at most 253 characters.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name: it must have 1 to 253 characters"));
    }
    for label in name.split('.') {
        crate::names::check_dns_label("DNS label", label).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    }
    Ok(())
}
