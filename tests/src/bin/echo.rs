//! `flipbit-echo ADDR:PORT/tcp ADDR:PORT/udp ...`: the demo's stand-in for kube-proxy on the
//! nodes. Each listener answers with its own address, so traffic shows which node carried it.

use std::net::SocketAddr;

fn main() {
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for arg in std::env::args().skip(1) {
        let parsed = arg
            .rsplit_once('/')
            .and_then(|(a, proto)| Some((a.parse::<SocketAddr>().ok()?, proto.to_owned())));
        match parsed {
            Some((addr, p)) if p == "tcp" => tcp.push(addr),
            Some((addr, p)) if p == "udp" => udp.push(addr),
            _ => {
                eprintln!("error: {arg:?} is not ADDR:PORT/tcp or ADDR:PORT/udp");
                std::process::exit(2);
            }
        }
    }
    match flipbit_tests::backends::Backends::start(&tcp, &udp) {
        Ok(b) => {
            println!("listening on {} TCP and {} UDP addresses", tcp.len(), udp.len());
            b.wait();
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
