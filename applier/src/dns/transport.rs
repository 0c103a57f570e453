//! How UPDATE messages travel: UDP for small ones (retried within the timeout), one TCP
//! connection for the rest with replies matched by id, and DNS's two-byte length framing that
//! the GSS-TSIG negotiation and lookups share.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Instant;

use super::client::{TCP_WINDOW, UpdateClient, UpdateStats};
use super::error::{Ctx, DnsError, eof_as_malformed};
use super::message::{Prepared, check_reply};

/// UDP sends per message before giving up (the timeout is shared between them).
const UDP_TRIES: u32 = 3;

impl UpdateClient {
    pub(super) fn udp(&self, ctx: &Ctx<'_>, wire: &[u8], id: u16) -> Result<Vec<u8>, DnsError> {
        let io_err = |e| ctx.io(e, self.timeout);
        let local: SocketAddr = match self.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(io_err)?;
        socket.connect(self.server).map_err(io_err)?;
        let start = Instant::now();
        let mut buf = vec![0u8; 65535];
        for attempt in 1..=UDP_TRIES {
            socket.send(wire).map_err(io_err)?;
            let deadline = start + self.timeout * attempt / UDP_TRIES;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                socket.set_read_timeout(Some(left)).map_err(io_err)?;
                match socket.recv(&mut buf) {
                    Ok(n) if is_reply_to(&buf[..n], id) => return Ok(buf[..n].to_vec()),
                    Ok(_) => continue, // a stray or late datagram: keep waiting for ours
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        Err(DnsError::TimedOut {
            server: self.server,
            zone: ctx.zone.to_string(),
            after: self.timeout,
        })
    }

    pub(super) fn tcp_connect(&self, ctx: &Ctx<'_>) -> Result<TcpStream, DnsError> {
        let io_err = |e| ctx.io(e, self.timeout);
        let stream = TcpStream::connect_timeout(&self.server, self.timeout).map_err(io_err)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(stream)
    }
}

/// UPDATE messages on one TCP connection, opened at the first, up to [`TCP_WINDOW`] of them
/// awaiting their replies, which are matched by id. A connection that fails (the server closed
/// it, say, on an idle timeout between two updates) is opened again once, and every unanswered
/// message sent again on it (safe: updates carry no prerequisites).
pub(super) struct TcpPipeline<'a> {
    client: &'a UpdateClient,
    ctx: &'a Ctx<'a>,
    stream: Option<TcpStream>,
    pending: Vec<Prepared>,
    reconnected: bool,
}

impl<'a> TcpPipeline<'a> {
    /// A pipeline with no connection yet: the first message opens it.
    pub(super) fn new(client: &'a UpdateClient, ctx: &'a Ctx<'a>) -> Self {
        Self {
            client,
            ctx,
            stream: None,
            pending: Vec::new(),
            reconnected: false,
        }
    }

    pub(super) fn push(&mut self, message: Prepared, stats: &mut UpdateStats) -> Result<(), DnsError> {
        while self.pending.len() >= TCP_WINDOW {
            self.receive(stats)?;
        }
        let stream = match self.stream.as_mut() {
            Some(stream) => stream,
            None => self.stream.insert(self.client.tcp_connect(self.ctx)?),
        };
        let sent = write_framed(stream, &message.wire);
        self.pending.push(message);
        match sent {
            Ok(()) => Ok(()),
            Err(e) => self.reconnect(self.ctx.io(e, self.client.timeout)),
        }
    }

    /// Waits for every reply still due.
    pub(super) fn finish(&mut self, stats: &mut UpdateStats) -> Result<(), DnsError> {
        while !self.pending.is_empty() {
            self.receive(stats)?;
        }
        Ok(())
    }

    /// Reads one reply and checks it against its request.
    fn receive(&mut self, stats: &mut UpdateStats) -> Result<(), DnsError> {
        let (ctx, timeout) = (self.ctx, self.client.timeout);
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(ctx.malformed("no connection for the replies due"));
            };
            let reply = match read_framed(stream) {
                Ok(reply) => reply,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.reconnect(eof_as_malformed(ctx, e, timeout))?;
                    continue;
                }
                Err(e) => return Err(eof_as_malformed(ctx, e, timeout)),
            };
            let Some(at) = self.pending.iter().position(|m| is_reply_to(&reply, m.id)) else {
                return Err(ctx.malformed("TCP reply does not match any request id"));
            };
            let message = self.pending.swap_remove(at);
            check_reply(ctx, &reply, message.verifier)?;
            stats.messages += 1;
            stats.records += message.records;
            stats.over_tcp += 1;
            return Ok(());
        }
    }

    /// After `error` on the connection: the first time, a new connection carrying every
    /// unanswered message again; after that, `error`.
    fn reconnect(&mut self, error: DnsError) -> Result<(), DnsError> {
        if self.reconnected {
            return Err(error);
        }
        self.reconnected = true;
        let mut stream = self.client.tcp_connect(self.ctx)?;
        for message in &self.pending {
            write_framed(&mut stream, &message.wire).map_err(|e| self.ctx.io(e, self.client.timeout))?;
        }
        self.stream = Some(stream);
        Ok(())
    }
}

pub(crate) fn write_framed(stream: &mut TcpStream, wire: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(wire.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request exceeds 64 KiB"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed)
}

pub(crate) fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len_buf = [0u8; 2];
    stream.read_exact(&mut len_buf)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len_buf))];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// A DNS header with our id and QR set.
pub(super) fn is_reply_to(bytes: &[u8], id: u16) -> bool {
    bytes.len() >= 12 && u16::from_be_bytes([bytes[0], bytes[1]]) == id && bytes[2] & 0x80 != 0
}
