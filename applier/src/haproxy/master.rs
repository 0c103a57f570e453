//! HAProxy's master CLI, the `-S` socket of master-worker mode. `show proc` says which workers
//! serve, which are leaving, how many reloads the master did and how many of the latest failed;
//! `reload` makes the master re-execute itself with its original arguments, so it re-reads
//! `<state>/current` and hands its listening sockets to the new worker.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// What `show proc` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Procs {
    pub master: i32,
    /// Reloads the master has done since it started.
    pub reloads: u64,
    /// Reloads that failed since the last good one (HAProxy 2.6's `[failed: N]`).
    pub failed: u64,
    /// Workers of the current generation.
    pub workers: BTreeSet<i32>,
    /// Workers of earlier generations, finishing their connections.
    pub old_workers: BTreeSet<i32>,
}

#[derive(Debug, Clone)]
pub struct MasterCli {
    pub socket: PathBuf,
    /// For each connection, read or write.
    pub timeout: Duration,
}

impl MasterCli {
    /// `show proc`, parsed. `; quit` makes the master close the connection after its answer
    /// (after a reload, 2.6 keeps it open otherwise).
    pub fn show_proc(&self) -> Result<Procs, String> {
        let text = self
            .send("show proc; quit")
            .map_err(|e| format!("{}: {e}", self.socket.display()))?;
        parse_show_proc(&text)
    }

    /// Sends `reload`. The master re-executes at once and drops the connection, with no answer
    /// in 2.6: the outcome is read from `show proc` afterwards.
    pub fn reload(&self) -> Result<(), String> {
        let mut conn = self.connect().map_err(|e| format!("{}: {e}", self.socket.display()))?;
        conn.write_all(b"reload\n")
            .map_err(|e| format!("{}: sending reload: {e}", self.socket.display()))?;
        let mut sink = Vec::new();
        // The connection ends when the master re-executes; a reset is as good as an end here.
        let _ = conn.read_to_end(&mut sink);
        Ok(())
    }

    fn connect(&self) -> std::io::Result<UnixStream> {
        let conn = UnixStream::connect(&self.socket)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }

    fn send(&self, command: &str) -> std::io::Result<String> {
        let mut conn = self.connect()?;
        conn.write_all(format!("{command}\n").as_bytes())?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Parses HAProxy 2.6's `show proc`:
///
/// ```text
/// #<PID>          <type>          <reloads>       <uptime>        <version>
/// 17054           master          2 [failed: 1]   0d00h10m53s     2.6.12-1+deb12u4
/// # workers
/// 17165           worker          1               0d00h10m49s     2.6.12-1+deb12u4
/// # old workers
/// 17055           worker          2               0d00h11m02s     2.6.12-1+deb12u4
/// # programs
/// ```
pub fn parse_show_proc(text: &str) -> Result<Procs, String> {
    #[derive(PartialEq)]
    enum Section {
        Head,
        Workers,
        Old,
        Other,
    }
    let mut section = Section::Head;
    let mut procs = Procs::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(title) = line.strip_prefix('#') {
            section = match title.trim() {
                "workers" => Section::Workers,
                "old workers" => Section::Old,
                t if t.starts_with("<PID>") => Section::Head,
                _ => Section::Other,
            };
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let pid = || -> Result<i32, String> {
            fields
                .first()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("show proc: no pid in {line:?}"))
        };
        match section {
            Section::Head if fields.get(1) == Some(&"master") => {
                procs.master = pid()?;
                procs.reloads = fields
                    .get(2)
                    .and_then(|r| r.parse().ok())
                    .ok_or_else(|| format!("show proc: no reload count in {line:?}"))?;
                procs.failed = fields
                    .iter()
                    .position(|f| *f == "[failed:")
                    .and_then(|i| fields.get(i + 1))
                    .and_then(|n| n.trim_end_matches(']').parse().ok())
                    .unwrap_or(0);
            }
            Section::Workers => {
                procs.workers.insert(pid()?);
            }
            Section::Old => {
                procs.old_workers.insert(pid()?);
            }
            _ => {}
        }
    }
    if procs.master == 0 {
        return Err(format!("show proc: no master in {text:?}"));
    }
    Ok(procs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_master_workers_and_failed_reloads() {
        let text = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
                    17054           master          2 [failed: 1]   0d00h10m53s     2.6.12-1+deb12u4\n\
                    # workers\n\
                    17165           worker          1               0d00h10m49s     2.6.12-1+deb12u4\n\
                    # old workers\n\
                    17055           worker          2               0d00h11m02s     2.6.12-1+deb12u4\n\
                    # programs\n\n";
        let procs = parse_show_proc(text).unwrap();
        assert_eq!(
            procs,
            Procs {
                master: 17054,
                reloads: 2,
                failed: 1,
                workers: [17165].into(),
                old_workers: [17055].into(),
            }
        );
    }

    #[test]
    fn a_fresh_master_and_garbage() {
        let text = "#<PID> <type> <reloads> <uptime> <version>\n4643 master 0 [failed: 0] 0d00h00m00s 2.6.12\n# workers\n4644 worker 0 0d00h00m00s 2.6.12\n# programs\n";
        let procs = parse_show_proc(text).unwrap();
        assert_eq!((procs.master, procs.reloads, procs.failed), (4643, 0, 0));
        assert_eq!(procs.workers, [4644].into());
        assert!(parse_show_proc("Unknown command\n").is_err());
        assert!(parse_show_proc("# workers\nx worker 0\n").is_err());
    }
}
