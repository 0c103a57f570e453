//! The lines a reload left in a log file: the load balancers report a failed reload there
//! (nginx's `[emerg]`, HAProxy's `[ALERT]`), so the applier can quote them in its one-line error.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The length of the file at `path` (0 when there is none), to read from after a reload.
pub fn len(path: Option<&Path>) -> u64 {
    path.and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
}

/// The lines holding `marker` written to `path` past `offset` (none when the file cannot be
/// read). Reads only that part: the log grows with every reload, and this may run every few milliseconds while one is
/// under way. A log rotated (shorter than before) since is read from its start.
pub fn lines_since(path: &Path, offset: u64, marker: &str) -> Vec<String> {
    read_since(path, offset)
        .map(|tail| tail.lines().filter(|l| l.contains(marker)).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn read_since(path: &Path, offset: u64) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let start = if file.metadata().ok()?.len() < offset {
        0
    } else {
        offset
    };
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_what_came_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        std::fs::write(&log, "[emerg] old\n").unwrap();
        let offset = len(Some(&log));
        assert!(lines_since(&log, offset, "[emerg]").is_empty());
        std::fs::write(&log, "[emerg] old\n[notice] fine\n[emerg] new one\n[emerg] two\n").unwrap();
        assert_eq!(lines_since(&log, offset, "[emerg]"), ["[emerg] new one", "[emerg] two"]);
        std::fs::write(&log, "[emerg] rotated\n").unwrap();
        assert_eq!(lines_since(&log, 1000, "[emerg]"), ["[emerg] rotated"]);
        assert!(lines_since(&dir.path().join("none"), 0, "[emerg]").is_empty());
        assert_eq!(len(None), 0);
    }
}
