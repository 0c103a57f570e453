//! A private BIND `named` for one test: its own directory, port, TSIG key and primary zone on
//! 127.0.0.1, so the DNS UPDATE client is proven against the server operators actually run
//! rather than against a mock that shares the client's reading of RFC 2136. It is stopped with
//! SIGTERM when dropped (also on panic).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key name in `key.conf`, granted `zonesub ANY` on the zone.
pub const KEY_NAME: &str = "flipbit-test";

/// A second zone every test server also serves, with the same key allowed: a commit must never
/// make an applier publish there (only the zone `flipbit.yaml` names is Flipbit's).
pub const OTHER_ZONE: &str = "other.test";

/// How long `named` may take to load the zone and answer.
const START_DEADLINE: Duration = Duration::from_secs(10);

pub struct NamedInstance {
    pub dir: PathBuf,
    pub port: u16,
    pub key_file: PathBuf,
    pub zone: String,
    /// `named`'s stderr (it logs there with `-f`).
    pub log: PathBuf,
    child: Child,
}

/// True when `named`, `dig`, `nsupdate` and `tsig-keygen` are installed.
pub fn have_bind() -> bool {
    let runs = |bin: &str, arg: &str| {
        Command::new(bin)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    runs("named", "-v") && runs("dig", "-v") && runs("nsupdate", "-V") && runs("tsig-keygen", "-h")
}

/// `tsig-keygen -a hmac-sha256 NAME > out`: a fresh random secret each call.
pub fn tsig_keygen(name: &str, out: &Path) -> Result<(), String> {
    let output = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", name])
        .output()
        .map_err(|e| format!("running tsig-keygen: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "tsig-keygen failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    std::fs::write(out, &output.stdout).map_err(|e| format!("{}: {e}", out.display()))
}

impl NamedInstance {
    /// Writes a key, a zone (SOA, NS `ns.<zone>.` with A 127.0.0.1) and a config into `dir`,
    /// checks the config with `named-checkconf`, starts `named` listening on 127.0.0.1:`port`
    /// and waits until it answers the zone's SOA.
    pub fn start(dir: &Path, port: u16, zone: &str) -> Result<Self, String> {
        let zone = zone.trim_end_matches('.').to_string();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
        let key_file = dir.join("key.conf");
        tsig_keygen(KEY_NAME, &key_file)?;

        let zone_file = dir.join(format!("{zone}.db"));
        let zone_text = format!(
            "$ORIGIN {zone}.\n$TTL 60\n\
             @ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n\
             @ IN NS ns.{zone}.\n\
             ns IN A 127.0.0.1\n"
        );
        write(&zone_file, &zone_text)?;
        let other_file = dir.join(format!("{OTHER_ZONE}.db"));
        write(&other_file, &zone_text.replace(&zone, OTHER_ZONE))?;

        let conf = dir.join("named.conf");
        let d = dir.display();
        let conf_text = format!(
            "include \"{key}\";\n\
             options {{\n\
             \tdirectory \"{d}\";\n\
             \tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\
             \tmanaged-keys-directory \"{d}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\
             \tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\
             \tdnssec-validation no;\n\
             }};\n\
             controls {{ }};\n\
             zone \"{zone}\" {{\n\
             \ttype primary;\n\
             \tfile \"{zf}\";\n\
             \tjournal \"{zf}.jnl\";\n\
             \tupdate-policy {{ grant {KEY_NAME} zonesub ANY; }};\n\
             }};\n\
             zone \"{OTHER_ZONE}\" {{\n\
             \ttype primary;\n\
             \tfile \"{of}\";\n\
             \tjournal \"{of}.jnl\";\n\
             \tupdate-policy {{ grant {KEY_NAME} zonesub ANY; }};\n\
             }};\n",
            key = key_file.display(),
            zf = zone_file.display(),
            of = other_file.display(),
        );
        write(&conf, &conf_text)?;

        let check = Command::new("named-checkconf")
            .arg(&conf)
            .output()
            .map_err(|e| format!("running named-checkconf: {e}"))?;
        if !check.status.success() {
            return Err(format!(
                "named-checkconf {}: {}{}",
                conf.display(),
                String::from_utf8_lossy(&check.stdout).trim(),
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }

        let log = dir.join("named.log");
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        // `-f` keeps named in the foreground (so it is our child and stops on SIGTERM); without
        // `-u` it keeps the user it was started as, root included, and can write the journal here.
        let child = Command::new("named")
            .args(["-f", "-n", "1", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting named: {e}"))?;
        let mut instance = Self {
            dir,
            port,
            key_file,
            zone,
            log,
            child,
        };
        instance.wait_ready()?;
        Ok(instance)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("named exited ({status}) before answering: {}", self.log_tail()));
            }
            if !self.query(&self.zone, "SOA").is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "named on port {} did not answer the SOA of {} within {}s: {}",
                    self.port,
                    self.zone,
                    START_DEADLINE.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of named's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The pid of this `named`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server address for the update client.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `dig +short` answers for `name` and `rtype` (e.g. "A", "TXT"), sorted; empty on NXDOMAIN,
    /// no data or no answer.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        let output = Command::new("dig")
            .args(["+short", "+time=1", "+tries=1", "-p"])
            .arg(self.port.to_string())
            .args(["@127.0.0.1", name, rtype])
            .output();
        let Ok(output) = output else { return Vec::new() };
        if !output.status.success() {
            return Vec::new();
        }
        let mut answers: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(String::from)
            .collect();
        answers.sort();
        answers
    }

    /// Runs `nsupdate -k key_file` on `script` (e.g. "update add x.ZONE 60 TXT hi") against this
    /// server and zone, for records the applier must leave alone.
    pub fn nsupdate(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting nsupdate: {e}"))?;
        let input = format!(
            "server 127.0.0.1 {}\nzone {}\n{}\nsend\n",
            self.port,
            self.zone,
            script.trim_end()
        );
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| format!("writing to nsupdate: {e}"))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nsupdate: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "nsupdate failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

impl Drop for NamedInstance {
    fn drop(&mut self) {
        crate::process::stop(&mut self.child);
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
