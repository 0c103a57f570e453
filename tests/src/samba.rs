//! A throwaway Samba Active Directory domain controller on 127.0.0.1 (its DNS on port 53, its KDC
//! on 88): the AD-integrated DNS that accepts only GSS-TSIG ("secure") updates.
//!
//! Provisioning takes several seconds, so it is done once per test process, into a fixed path;
//! each DC then starts from a copy of that provisioned tree at the same path (Samba's databases
//! hold absolute paths). The DC needs fixed ports, so only one runs at a time on the machine: a
//! DC holds a file lock from its start until it is dropped, which stops it.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub const REALM: &str = "K8S.EXAMPLE.TEST";
pub const DOMAIN: &str = "k8s.example.test";
/// The DC's host name: the DNS service principal is `DNS/dc1.k8s.example.test`.
pub const DC_HOST: &str = "dc1.k8s.example.test";
/// The service account the applier signs as, and its password.
pub const ACCOUNT: &str = "dnsupdater";
pub const ACCOUNT_PASSWORD: &str = "Flipbit-Svc-1";
pub const ADMIN_PASSWORD: &str = "Flipbit-Admin-1";
/// The DC's DNS server.
pub const DNS: &str = "127.0.0.1:53";

/// `samba` and `samba-tool` are installed and this is root (the DC binds ports 53 and 88).
pub fn have_samba() -> bool {
    crate::is_root()
        && ["samba", "samba-tool"].iter().all(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Root of this process's DCs: `live` runs, `template` is the provisioned copy.
fn root() -> PathBuf {
    Path::new("/var/tmp").join(format!("flipbit-ad-{}", std::process::id()))
}

/// A running DC; dropping it stops the DC and removes its tree.
pub struct SambaDc {
    pub dir: PathBuf,
    /// `KRB5_CONFIG` for clients of this realm (KDC at 127.0.0.1, no DNS lookups).
    pub krb5_conf: PathBuf,
    /// The keytab of [`ACCOUNT`].
    pub keytab: PathBuf,
    child: Option<Child>,
    _lock: DcLock,
}

/// Which parts of the DC run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    All,
    /// Everything but the KDC: logins fail as with an unreachable KDC.
    NoKdc,
}

impl SambaDc {
    /// Starts a DC from the provisioned template (provisioning it on first use).
    pub fn start(services: Services) -> Result<SambaDc, String> {
        let lock = DcLock::take()?;
        let template = template()?;
        let live = root().join("live");
        let _ = fs::remove_dir_all(&live);
        run(Command::new("cp").arg("-a").arg(template).arg(&live))?;
        let mut dc = SambaDc {
            krb5_conf: live.join("krb5.conf"),
            keytab: live.join("dnsupdater.keytab"),
            dir: live,
            child: None,
            _lock: lock,
        };
        dc.spawn(services)?;
        Ok(dc)
    }

    fn spawn(&mut self, services: Services) -> Result<(), String> {
        let mut list = "server services=-s3fs -winbindd -nbt -wrepl -ntp_signd".to_string();
        if services == Services::NoKdc {
            list.push_str(" -kdc");
        }
        let log = fs::File::create(self.dir.join("samba.out")).map_err(|e| e.to_string())?;
        let child = Command::new("samba")
            .arg("-i")
            .arg("-s")
            .arg(self.dir.join("etc/smb.conf"))
            .arg(format!("--option={list}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting samba: {e}"))?;
        self.child = Some(child);
        // Ready when DNS answers the zone's SOA (and, with one, the KDC accepts connections).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ready_in_a_row = 0;
        loop {
            let dns_ready = Command::new("dig")
                .args(["+short", "+time=1", "+tries=1", "@127.0.0.1", DOMAIN, "SOA"])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            let kdc_ready = services == Services::NoKdc
                || TcpStream::connect_timeout(&"127.0.0.1:88".parse().expect("addr"), Duration::from_millis(200))
                    .is_ok();
            // Samba's DNS task can answer once and then rebind its sockets: three answers in a row.
            ready_in_a_row = if dns_ready && kdc_ready { ready_in_a_row + 1 } else { 0 };
            if ready_in_a_row >= 3 {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let out = fs::read_to_string(self.dir.join("samba.out")).unwrap_or_default();
                return Err(format!("samba exited ({status}) before serving DNS: {out}"));
            }
            if Instant::now() > deadline {
                return Err("samba did not answer DNS on 127.0.0.1:53 within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the DC and starts it again (it forgets its GSS-TSIG contexts; the zone stays).
    pub fn restart(&mut self, services: Services) -> Result<(), String> {
        self.stop();
        self.spawn(services)
    }

    pub fn dns(&self) -> SocketAddr {
        DNS.parse().expect("addr")
    }

    /// `dig` answers (sorted) for `name` `rtype`, from the DC.
    pub fn query(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new("dig")
            .args(["+short", "+time=2", "+tries=1", "@127.0.0.1", name, rtype])
            .output()
            .expect("dig");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }

    /// Adds an A record as the domain administrator (a record Flipbit did not write).
    pub fn admin_add_a(&self, name: &str, addr: &str) -> Result<(), String> {
        run(Command::new("samba-tool")
            .args(["dns", "add", "127.0.0.1", DOMAIN, name, "A", addr])
            .arg("-U")
            .arg(format!("administrator%{ADMIN_PASSWORD}"))
            .arg("-s")
            .arg(self.dir.join("etc/smb.conf")))
    }

    /// A file with `text` in the DC's tree (a password file, a wrong keytab).
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, text).expect("writing a file in the DC dir");
        path
    }

    /// A keytab for `principal`, an account the domain does not have (made with `ktutil`).
    pub fn keytab_for_unknown_principal(&self, principal: &str) -> PathBuf {
        let path = self.dir.join("unknown.keytab");
        let script = format!(
            "addent -password -p {principal} -k 1 -e aes256-cts-hmac-sha1-96\nNot-A-Password-1\nwkt {}\nquit\n",
            path.display()
        );
        let mut child = Command::new("ktutil")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ktutil (krb5-user)");
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, script.as_bytes()).expect("writing to ktutil");
        }
        assert!(child.wait().is_ok_and(|s| s.success()), "ktutil failed");
        assert!(path.exists(), "ktutil wrote no keytab");
        path
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: signals the process group this DC was started in (samba forks its services).
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: as above; whatever is left of the group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            // The forked services may outlive the parent briefly: wait for the ports to free.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline
                && (TcpStream::connect("127.0.0.1:53").is_ok() || TcpStream::connect("127.0.0.1:88").is_ok())
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Serializes DCs: a mutex for the threads of this process, a file lock for other processes.
struct DcLock {
    _thread: MutexGuard<'static, ()>,
    file: fs::File,
}

impl DcLock {
    fn take() -> Result<DcLock, String> {
        static THREADS: Mutex<()> = Mutex::new(());
        let thread = THREADS.lock().unwrap_or_else(PoisonError::into_inner);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/var/tmp/flipbit-samba-dc.lock")
            .map_err(|e| format!("opening the DC lock: {e}"))?;
        // SAFETY: flock on a descriptor this struct owns; released when it is dropped.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if rc != 0 {
            return Err(format!("locking the DC lock: {}", std::io::Error::last_os_error()));
        }
        Ok(DcLock { _thread: thread, file })
    }
}

impl Drop for DcLock {
    fn drop(&mut self) {
        // SAFETY: as in `take`.
        unsafe {
            libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.file), libc::LOCK_UN);
        }
    }
}

/// The provisioned tree, made once per process (under the DC lock, by the first DC).
fn template() -> Result<&'static Path, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE.get_or_init(provision).as_deref().map_err(Clone::clone)
}

fn provision() -> Result<PathBuf, String> {
    let root = root();
    let live = root.join("live");
    let template = root.join("template");
    let _ = fs::remove_dir_all(&root);
    remove_stale_roots();
    fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    run(Command::new("samba-tool")
        .args([
            "domain",
            "provision",
            "--server-role=dc",
            "--dns-backend=SAMBA_INTERNAL",
        ])
        .arg(format!("--realm={REALM}"))
        .arg("--domain=K8S")
        .arg("--host-name=dc1")
        .arg("--host-ip=127.0.0.1")
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg("--option=interfaces=lo")
        .arg("--option=bind interfaces only=yes")
        .arg(format!("--targetdir={}", live.display())))?;
    let smb_conf = live.join("etc/smb.conf");
    let text = fs::read_to_string(&smb_conf).map_err(|e| format!("reading {}: {e}", smb_conf.display()))?;
    let d = live.display();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.trim_start();
        if key.starts_with("dns forwarder") || key.starts_with("log file") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[global]" {
            for (k, v) in [
                ("log file", format!("{d}/log.%m")),
                ("pid directory", format!("{d}/run")),
                ("ncalrpc dir", format!("{d}/run/ncalrpc")),
                ("winbindd socket directory", format!("{d}/run/winbindd")),
                ("ntp signd socket directory", format!("{d}/run/ntp_signd")),
                ("tls enabled", "no".to_string()),
            ] {
                out.push_str(&format!("\t{k} = {v}\n"));
            }
        }
    }
    fs::write(&smb_conf, out).map_err(|e| e.to_string())?;
    fs::create_dir_all(live.join("run")).map_err(|e| e.to_string())?;
    fs::write(
        live.join("krb5.conf"),
        format!(
            "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  dns_lookup_realm = false\n  rdns = false\n  dns_canonicalize_hostname = false\n  udp_preference_limit = 1\n[realms]\n  {REALM} = {{\n    kdc = 127.0.0.1\n  }}\n[domain_realm]\n  .{DOMAIN} = {REALM}\n  {DOMAIN} = {REALM}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    run(Command::new("samba-tool")
        .args(["user", "create", ACCOUNT, ACCOUNT_PASSWORD, "-s"])
        .arg(&smb_conf))?;
    run(Command::new("samba-tool")
        .args(["domain", "exportkeytab"])
        .arg(live.join("dnsupdater.keytab"))
        .arg(format!("--principal={ACCOUNT}@{REALM}"))
        .arg("-s")
        .arg(&smb_conf))?;
    run(Command::new("cp").arg("-a").arg(&live).arg(&template))?;
    fs::remove_dir_all(&live).map_err(|e| e.to_string())?;
    Ok(template)
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Removes this process's provisioned template (call at the end of a bench; test processes
/// leave it to the OS's /var/tmp cleaning, as they cannot know which test runs last).
pub fn remove_template() {
    let _ = fs::remove_dir_all(root());
}

/// The trees (about 40 MB each) of test processes that have ended.
fn remove_stale_roots() {
    let Ok(entries) = fs::read_dir("/var/tmp") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("flipbit-ad-")) else {
            continue;
        };
        if pid
            .parse::<u32>()
            .is_ok_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
