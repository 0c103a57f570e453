//! Traffic through the LB: a TCP connection or a UDP datagram, and the backend that answered.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// Connects to `addr` and returns the backend's answer (`<node>:<port>`).
pub fn tcp(addr: SocketAddr) -> Result<String, String> {
    let conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("tcp {addr}: {e}"))?;
    answer(conn, &format!("tcp {addr}"))
}

/// What the backend at the other end of `conn` says before it closes (3 s at most); `what`
/// names the connection in errors.
fn answer(mut conn: TcpStream, what: &str) -> Result<String, String> {
    conn.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(|e| format!("{what}: {e}"))?;
    if out.trim().is_empty() {
        return Err(format!("{what}: connection closed without an answer"));
    }
    Ok(out.trim().to_owned())
}

/// Sends one datagram to `addr` and returns the answer.
pub fn udp(addr: SocketAddr) -> Result<String, String> {
    let bind: SocketAddr = if addr.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }
        .parse()
        .map_err(|_| "bind")?;
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    udp_on(&socket, addr)
}

/// The distinct answers of `n` probes of `addr` (TCP, or UDP when `udp`), each retried for up to
/// 3 s; panics naming the address when one never answers. Used to see which nodes a route reaches.
pub fn answers(addr: SocketAddr, udp: bool, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|_| {
            crate::wait::wait_until(Duration::from_secs(3), || if udp { self::udp(addr) } else { tcp(addr) })
                .unwrap_or_else(|e| panic!("no answer from {addr}: {e}"))
        })
        .collect()
}

/// [`tcp`] from the local address `src` (any 127.0.0.0/8 address binds on loopback), for a
/// Service that allows only some client ranges.
pub fn tcp_from(src: std::net::IpAddr, addr: SocketAddr) -> Result<String, String> {
    answer(connect_from(src, addr)?, &format!("tcp {src} -> {addr}"))
}

/// A TCP connection from `src` to `addr` (bound before connecting; 2 s to connect).
pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> Result<TcpStream, String> {
    use std::os::fd::FromRawFd;
    let fail = |what: &str| format!("tcp {src} -> {addr}: {what}: {}", std::io::Error::last_os_error());
    let (domain, local, remote) = match (src, addr) {
        (std::net::IpAddr::V4(s), SocketAddr::V4(a)) => {
            (libc::AF_INET, sockaddr_v4(s, 0), sockaddr_v4(*a.ip(), a.port()))
        }
        _ => return Err(format!("tcp {src} -> {addr}: IPv4 only")),
    };
    // SAFETY: a socket this function owns until it is handed to the TcpStream (or closed on error).
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(fail("socket"));
        }
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = fail("bind");
            libc::close(fd);
            return Err(e);
        }
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = fail("connect");
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

fn sockaddr_v4(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// [`udp`] from `src`; also the socket, so a caller can send more from the same client.
pub fn udp_from(src: std::net::IpAddr, addr: SocketAddr) -> Result<String, String> {
    let socket = UdpSocket::bind(SocketAddr::new(src, 0)).map_err(|e| e.to_string())?;
    udp_on(&socket, addr)
}

/// Sends one datagram from `socket` to `addr` and returns the answer (2 s at most); an empty one
/// is what nginx sends back when its upstream refused.
pub fn udp_on(socket: &UdpSocket, addr: SocketAddr) -> Result<String, String> {
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
