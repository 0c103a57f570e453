//! The version of the generated file formats (`lb/` and `dns/`), recorded in the state repo's
//! `format.yaml` so an applier can tell output it knows how to check from output a newer
//! generator wrote. A repo without the file is format 1: the files generators wrote before the
//! version was recorded.

/// Repo path of the format record (generator-owned).
pub const FORMAT_FILE: &str = "format.yaml";

/// The format this build writes, and the newest one it reads.
pub const OUTPUT_FORMAT: u32 = 2;

/// The format of a repo with no `format.yaml`.
pub const UNRECORDED_FORMAT: u32 = 1;

/// The format `svc`'s files need: 2 for source ranges, timeouts or UDP sessions (the directives
/// format 1 has not), 1 otherwise. Never newer than this build writes.
pub fn needed(svc: &crate::exposure::ExposedService) -> u32 {
    let wants = if svc.settings.traffic.is_tuned() { 2 } else { 1 };
    wants.min(OUTPUT_FORMAT)
}

/// The text of `format.yaml` for `version`.
pub fn render(version: u32) -> String {
    format!(
        "# Written by flipbit-generator: the version of the generated files under lb/ and dns/.\n\
         # An applier refuses a commit whose format is newer than it reads.\n\
         outputFormat: {version}\n"
    )
}

/// Reads `format.yaml`: `outputFormat: N` (comments and blank lines allowed), nothing else.
pub fn parse(text: &str) -> Result<u32, String> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = line
            .strip_prefix("outputFormat:")
            .ok_or_else(|| format!("{FORMAT_FILE} line {}: expected `outputFormat: <number>`", i + 1))?;
        let version: u32 = value
            .trim()
            .parse()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| format!("{FORMAT_FILE} line {}: the format is not a number from 1 up", i + 1))?;
        if found.replace(version).is_some() {
            return Err(format!("{FORMAT_FILE} line {}: outputFormat is given twice", i + 1));
        }
    }
    found.ok_or_else(|| format!("{FORMAT_FILE}: no outputFormat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_anything_else() {
        assert_eq!(parse(&render(OUTPUT_FORMAT)), Ok(OUTPUT_FORMAT));
        assert_eq!(parse("outputFormat: 7\n"), Ok(7));
        for bad in [
            "",
            "outputFormat: x\n",
            "outputFormat: 0\n",
            "outputFormat: 1\noutputFormat: 1\n",
            "other: 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
