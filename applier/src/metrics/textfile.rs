//! `--metrics-file`: the metrics as a file for node_exporter's textfile collector, which reads
//! every `*.prom` file of its directory on each scrape. The file is replaced whole (a temporary
//! `.<name>.new` beside it, which the collector skips, then a rename), so a scrape never reads
//! half a file.

use std::io;
use std::path::Path;

/// Replaces `path` with `text`. Not synced to disk: after a power loss the file may be the
/// previous one (or gone), which the next run rewrites; a `watch` polling every second must not
/// cost two fsyncs a second for it.
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the metrics file needs a file name"))?;
    let tmp = path.with_file_name(format!(".{name}.new"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The text a previous run wrote, if any.
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flipbit.prom");
        super::write(&path, "a 1\n").expect("write");
        super::write(&path, "a 2\n").expect("write again");
        assert_eq!(super::read(&path).as_deref(), Some("a 2\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names, ["flipbit.prom"], "no temporary file is left");
    }
}
