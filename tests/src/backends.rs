//! Stand-ins for kube-proxy on the nodes: every node address and node port answers with
//! `<address>:<port>\n` over TCP (then closes) and echoes that to any UDP datagram, so a probe
//! through the LB learns exactly which node carried it.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Backends {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    /// Listens on every address in `tcp` and `udp`.
    pub fn start(tcp: &[SocketAddr], udp: &[SocketAddr]) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in tcp {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            let stop = stop.clone();
            let addr = *addr;
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(format!("{addr}\n").as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        for addr in udp {
            let socket = UdpSocket::bind(addr)?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            let stop = stop.clone();
            let addr = *addr;
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(format!("{addr}\n").as_bytes(), from);
                    }
                }
            }));
        }
        Ok(Self { stop, threads })
    }

    /// Blocks until stopped by a signal (for the demo's backend process).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
