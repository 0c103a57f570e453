//! A systemd service's sandbox, applied to one command without systemd (these machines do not run
//! it as PID 1): the unit's `CapabilityBoundingSet=` and `NoNewPrivileges=` through `setpriv`, and
//! `ProtectSystem=strict` with its `ReadWritePaths=` as a private mount namespace (`unshare`) whose
//! root is read-only except for those paths. Not emulated: the system call filter, the address
//! family restriction and the kernel protections; they are checked by `systemd-analyze verify`
//! only. Root only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The parts of a service's `[Service]` section this module applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Capability names as systemd writes them (`CAP_NET_BIND_SERVICE`).
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// `ReadWritePaths=`, without the `-` that lets a path be absent.
    pub writable: Vec<PathBuf>,
    /// `ProtectSystem=strict`: everything else read-only.
    pub strict: bool,
}

impl Sandbox {
    /// Reads a unit file's text. Panics on a setting this module cannot apply faithfully (a
    /// capability list that removes with `~`, which no Flipbit unit uses).
    pub fn of_unit(unit: &str) -> Sandbox {
        let values = |key: &str| -> Vec<String> {
            unit.lines()
                .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
                .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .collect()
        };
        let capabilities = values("CapabilityBoundingSet");
        assert!(
            capabilities.iter().all(|c| c.starts_with("CAP_")),
            "CapabilityBoundingSet= in a form this emulation does not apply: {capabilities:?}"
        );
        Sandbox {
            capabilities,
            no_new_privileges: values("NoNewPrivileges") == ["yes"],
            writable: values("ReadWritePaths")
                .iter()
                .map(|p| PathBuf::from(p.trim_start_matches('-')))
                .collect(),
            strict: values("ProtectSystem") == ["strict"],
        }
    }

    /// The same sandbox without capability `cap`: to show that a test needs it.
    pub fn without(&self, cap: &str) -> Sandbox {
        let mut less = self.clone();
        less.capabilities.retain(|c| c != cap);
        less
    }

    /// Runs `program args` inside the sandbox, with `extra_writable` added to the writable paths
    /// (a test's own directories, which stand for a site's nginx paths).
    pub fn run(&self, extra_writable: &[&Path], program: &Path, args: &[String]) -> Output {
        let bounding: Vec<String> = std::iter::once("-all".to_owned())
            .chain(
                self.capabilities
                    .iter()
                    .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase())),
            )
            .collect();
        // Bind each writable path onto itself (a mount of its own keeps its flags), then make the
        // root read-only: in the namespace only, and undone when the command exits.
        let mut script = String::from("set -e\n");
        if self.strict {
            let paths = self
                .writable
                .iter()
                .map(PathBuf::as_path)
                .chain(extra_writable.iter().copied());
            for path in paths {
                let p = shell_quote(&path.display().to_string());
                script.push_str(&format!("if [ -e {p} ]; then mount --bind {p} {p}; fi\n"));
            }
            script.push_str("mount -o remount,bind,ro /\n");
        }
        script.push_str("exec setpriv");
        if self.no_new_privileges {
            script.push_str(" --no-new-privs");
        }
        script.push_str(&format!(
            " --bounding-set {} --inh-caps -all -- \"$@\"\n",
            bounding.join(",")
        ));
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                &script,
                "sandbox",
            ])
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running unshare: {e}"))
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_applies_and_nothing_else() {
        let unit = "[Service]\nCapabilityBoundingSet=CAP_A CAP_B\nNoNewPrivileges=yes\nProtectSystem=strict\n\
                    ReadWritePaths=/var/lib/x -/etc/y\nReadWritePaths=/run\nPrivateTmp=yes\n";
        let s = Sandbox::of_unit(unit);
        assert_eq!(s.capabilities, ["CAP_A", "CAP_B"]);
        assert!(s.no_new_privileges && s.strict);
        assert_eq!(
            s.writable,
            [
                PathBuf::from("/var/lib/x"),
                PathBuf::from("/etc/y"),
                PathBuf::from("/run")
            ]
        );
        assert_eq!(s.without("CAP_A").capabilities, ["CAP_B"]);
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
