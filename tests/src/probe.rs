//! Traffic through the LB: a TCP connection or a UDP datagram, and the backend that answered.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Connects to `addr` and returns the backend's answer (`<node>:<port>`).
pub fn tcp(addr: SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("tcp {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(|e| format!("tcp {addr}: {e}"))?;
    if out.trim().is_empty() {
        return Err(format!("tcp {addr}: connection closed without an answer"));
    }
    Ok(out.trim().to_owned())
}

/// Sends one datagram to `addr` and returns the answer.
pub fn udp(addr: SocketAddr) -> Result<String, String> {
    let bind: SocketAddr = if addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }
        .parse()
        .map_err(|_| "bind")?;
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    socket.send_to(b"ping", addr).map_err(|e| format!("udp {addr}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| format!("udp {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    if text.is_empty() {
        return Err(format!("udp {addr}: empty answer (upstream refused)"));
    }
    Ok(text)
}

/// Retries `f` until it succeeds or `timeout` passes (a reload takes effect within ~100 ms).
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The distinct answers of `n` probes of `addr` (TCP, or UDP when `udp`), each retried for up to
/// 3 s; panics naming the address when one never answers. Used to see which nodes a route reaches.
pub fn answers(addr: SocketAddr, udp: bool, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|_| {
            eventually(Duration::from_secs(3), || if udp { self::udp(addr) } else { tcp(addr) })
                .unwrap_or_else(|e| panic!("no answer from {addr}: {e}"))
        })
        .collect()
}
