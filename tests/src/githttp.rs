//! A private HTTPS Git server on 127.0.0.1: nginx (TLS, basic auth) in front of
//! `git http-backend` through Debian's `fcgiwrap` on a unix socket, all in the test's directory
//! and stopped when dropped. Its certificate is signed by a CA `openssl` makes for the test
//! ([`TestCa`]), so a client trusts it only when given that CA.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The basic auth user and password the server accepts.
pub const USER: &str = "flipbit";
pub const PASSWORD: &str = "s3cret-token";

/// True when nginx, fcgiwrap, openssl and git's http-backend are installed.
pub fn have_git_https() -> bool {
    let found = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok();
    found("nginx", "-v")
        && found("openssl", "version")
        && Path::new("/usr/sbin/fcgiwrap").exists()
        && http_backend().is_some_and(|p| p.exists())
}

fn http_backend() -> Option<PathBuf> {
    let out = Command::new("git").arg("--exec-path").output().ok()?;
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("git-http-backend"))
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out)
}

/// A CA made by `openssl req -x509` (EC P-256, valid two days).
pub struct TestCa {
    /// The CA certificate, PEM: what `--git-ca-bundle` takes.
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, common_name: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-days", "2", "-subj", &format!("/CN={common_name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        Ok(Self { cert, key })
    }

    /// A server certificate for IP:127.0.0.1 and DNS:localhost, CN "Flipbit test server";
    /// returns (certificate, key).
    pub fn server_cert(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        let (cert, key, csr, ext) = (
            dir.join("server.pem"),
            dir.join("server.key"),
            dir.join("server.csr"),
            dir.join("server.ext"),
        );
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-subj", "/CN=Flipbit test server", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "1", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert))?;
        Ok((cert, key))
    }
}

pub struct GitHttps {
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: TestCa,
    nginx: Child,
    fcgiwrap: Child,
    error_log: PathBuf,
}

impl GitHttps {
    /// Serves every bare repo under `repos` at `https://127.0.0.1:<port>/<name>`, with basic auth
    /// ([`USER`], [`PASSWORD`]) on every request; working files go to `dir`.
    pub fn start(dir: &Path, repos: &Path, port: u16) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let dir = dir.canonicalize().map_err(|e| e.to_string())?;
        let ca = TestCa::new(&dir.join("ca"), "Flipbit test CA")?;
        let (cert, key) = ca.server_cert(&dir)?;
        let hash = run(Command::new("openssl").args(["passwd", "-apr1", PASSWORD]))?;
        let htpasswd = dir.join("htpasswd");
        let line = format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout).trim());
        std::fs::write(&htpasswd, line + "\n").map_err(|e| e.to_string())?;

        let socket = dir.join("fcgiwrap.sock");
        let fcgiwrap = Command::new("/usr/sbin/fcgiwrap")
            .arg("-s")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting fcgiwrap: {e}"))?;

        let backend = http_backend().ok_or("git --exec-path failed")?;
        let (conf, error_log) = (dir.join("nginx.conf"), dir.join("error.log"));
        // As root, nginx's workers would run as nobody, who cannot reach the socket in the test's
        // private directory.
        let user = if crate::is_root() { "user root;\n" } else { "" };
        let d = dir.display();
        let text = format!(
            "{user}pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\ndaemon off;\nworker_processes 1;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               client_max_body_size 0;\n\
               server {{\n\
                 listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {cert};\n\
                 ssl_certificate_key {key};\n\
                 location / {{\n\
                   auth_basic \"flipbit state repo\";\n\
                   auth_basic_user_file {htpasswd};\n\
                   include /etc/nginx/fastcgi_params;\n\
                   fastcgi_pass unix:{socket};\n\
                   fastcgi_param SCRIPT_FILENAME {backend};\n\
                   fastcgi_param GIT_PROJECT_ROOT {repos};\n\
                   fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n\
                   fastcgi_param PATH_INFO $uri;\n\
                   fastcgi_param REMOTE_USER $remote_user;\n\
                 }}\n\
               }}\n\
             }}\n",
            cert = cert.display(),
            key = key.display(),
            htpasswd = htpasswd.display(),
            socket = socket.display(),
            backend = backend.display(),
            repos = repos.display(),
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let nginx = crate::nginx::command(&dir, &conf, &error_log)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting nginx: {e}"))?;
        let mut server = Self {
            port,
            ca,
            nginx,
            fcgiwrap,
            error_log,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() || UnixStream::connect(&socket).is_err() {
            let log = std::fs::read_to_string(&server.error_log).unwrap_or_default();
            if let Ok(Some(status)) = server.nginx.try_wait() {
                return Err(format!("nginx exited ({status}): {log}"));
            }
            if let Ok(Some(status)) = server.fcgiwrap.try_wait() {
                return Err(format!("fcgiwrap exited ({status})"));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the HTTPS Git server did not answer on port {port} within 10 s: {log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// The URL of the repo `name` (a directory under the served root).
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for GitHttps {
    fn drop(&mut self) {
        crate::process::stop(&mut self.nginx);
        crate::process::stop(&mut self.fcgiwrap);
    }
}
