//! `git daemon` on loopback serving a directory of bare repos, push enabled: a remote in its own
//! process, as the generator meets one in production (a local-path remote would make libgit2 do
//! the receiving side's work, indexing the pushed pack, inside the generator's process).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct GitDaemon {
    child: Child,
    addr: SocketAddr,
}

impl GitDaemon {
    /// Serves every repo under `base` at `git://127.0.0.1:<port>/<name>`.
    pub fn start(base: &Path) -> Result<Self, String> {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free loopback port: {e}"))?;
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--enable=receive-pack")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={}", addr.port()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting git daemon: {e}"))?;
        let mut daemon = Self { child, addr };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("git daemon exited: {status}"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = daemon.child.kill();
                return Err(format!("git daemon did not listen on {addr} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// The URL of the repo `name` (a directory under the base).
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.addr)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
