//! `watch --metrics-listen`: `/metrics` over plain HTTP/1.1 from one thread of the std library's
//! `TcpListener`, one short connection at a time. A Prometheus scrape is a GET every few seconds,
//! so an async server would bring a runtime and its dependencies for nothing; each connection
//! gets two seconds to send its request, so a client that stalls delays a scrape, never a run.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The latest metrics text, replaced after every run.
pub type Shared = Arc<Mutex<String>>;

/// How long a client may take to send its request, and to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read.
const MAX_REQUEST: usize = 8192;

/// Binds `addr` and serves `text` at `/metrics` from a thread; the bound address.
pub fn serve(addr: SocketAddr, text: Shared) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &text) {
                tracing::debug!(error = %e, "a metrics request failed");
            }
        }
    })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream, text: &Mutex<String>) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            text.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        ),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found: try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET /metrics\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        let mut out = String::new();
        stream.read_to_string(&mut out).expect("response");
        out
    }

    #[test]
    fn serves_the_latest_text_at_metrics_only() {
        let text: Shared = Arc::new(Mutex::new("a 1\n".into()));
        let addr = serve("127.0.0.1:0".parse().expect("addr"), text.clone()).expect("serve");
        let first = get(addr, "/metrics");
        assert!(
            first.starts_with("HTTP/1.1 200 OK\r\n") && first.ends_with("\r\n\r\na 1\n"),
            "{first}"
        );
        *text.lock().expect("lock") = "a 2\n".into();
        assert!(get(addr, "/metrics?x=1").ends_with("a 2\n"));
        assert!(get(addr, "/").starts_with("HTTP/1.1 404"));
    }
}
