//! A private OpenSSH server (Debian's `openssh-server`) on 127.0.0.1 for Git over SSH: its own
//! config, port, ed25519 host key and authorized key in the test's directory, run in the
//! foreground (`sshd -f CONFIG -D -e`) and stopped when dropped. The client logs in as root with
//! the test's key only (`PermitRootLogin prohibit-password`), and runs the `git-upload-pack` /
//! `git-receive-pack` that libgit2 asks for on a bare repo anywhere on the machine, as a real Git
//! host over SSH does.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sshkeys::SshKey;

/// Where Debian installs the server; sshd must be started by its absolute path.
pub const SSHD: &str = "/usr/sbin/sshd";

/// True when sshd (openssh-server) and ssh-keyscan (openssh-client) are installed.
pub fn have_sshd() -> bool {
    Path::new(SSHD).exists() && Command::new("ssh-keyscan").arg("-V").output().is_ok()
}

pub struct Sshd {
    pub port: u16,
    /// The server's host key: `public` is what `ssh-keyscan` reports, `fingerprint` its SHA256.
    pub host_key: SshKey,
    /// The client's private key (FLIPBIT_GIT_SSH_KEY).
    pub client_key: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1:`port` with files in `dir`. Needs root (it logs in as root and
    /// switches users the way a real server does) and `/run/sshd`, its privilege separation
    /// directory, which is created when missing.
    pub fn start(dir: &Path, port: u16) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("creating /run/sshd: {e}"))?;
        let host_key = SshKey::generate(&dir, "host_ed25519");
        let client = SshKey::generate(&dir, "client_ed25519");
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", client.public)).map_err(|e| e.to_string())?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "# One test's server: its own address, host key, authorized keys and pid file.\n\
                 ListenAddress 127.0.0.1:{port}\n\
                 HostKey {host}\n\
                 PidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {authorized}\n\
                 # Tests run as root: root may log in, with a key only.\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers root\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 # The keys live in a temporary directory under the world-writable /tmp.\n\
                 StrictModes no\n",
                host = host_key.private.display(),
                dir = dir.display(),
                authorized = authorized.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join("sshd.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(SSHD)
            .arg("-f")
            .arg(&config)
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {SSHD}: {e}"))?;
        let mut sshd = Self {
            port,
            host_key,
            client_key: client.private,
            log,
            child,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(&sshd.log).unwrap_or_default();
            if let Ok(Some(status)) = sshd.child.try_wait() {
                return Err(format!("sshd exited ({status}): {log}"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("sshd did not listen on 127.0.0.1:{port} within 10 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(sshd)
    }

    /// The `ssh://` URL of the bare repo at `repo` (an absolute path on this machine).
    pub fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// The known_hosts line OpenSSH writes for this server (`[127.0.0.1]:PORT ssh-ed25519 ...`).
    pub fn known_hosts_line(&self) -> String {
        let mut fields = self.host_key.public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SIGTERM: connections' children end with it.
        crate::process::stop(&mut self.child);
    }
}
