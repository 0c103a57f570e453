//! A private L2 segment for what loopback cannot show (addresses on an interface, ARP and
//! neighbour discovery, neighbour tables): two network namespaces the test creates, an "LB host"
//! and a "client", joined by a veth pair named `seg` on both ends. Addresses given to it exist
//! only inside those namespaces. Code runs inside one through [`in_netns`] (a thread that joined
//! it: the sockets it opens, the threads and processes it starts, live there). Dropping the
//! segment stops every process left in its namespaces and deletes them, also on panic.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

/// Every namespace these tests create starts with this; a test names its own after it.
pub const PREFIX: &str = "fbt-addr-";

/// The veth end's name in both namespaces.
pub const DEV: &str = "seg";

pub struct Segment {
    pub lb: String,
    pub client: String,
}

impl Segment {
    /// Namespaces `fbt-addr-<tag>-lb` and `fbt-addr-<tag>-cl` with loopback up, `seg` up on both
    /// sides with the given addresses (CIDR text; IPv6 ones without duplicate address detection),
    /// and on the LB side `ip_nonlocal_bind` on, as `--manage-addresses` needs. `None` (through
    /// [`crate::require`]) when not root or without `ip`.
    pub fn create(tag: &str, lb_addresses: &[&str], client_addresses: &[&str]) -> Option<Self> {
        crate::require(&[crate::tool::ROOT, crate::tool::IPROUTE])?;
        let segment = Self {
            lb: format!("{PREFIX}{tag}-lb"),
            client: format!("{PREFIX}{tag}-cl"),
        };
        // Left over by a run that was killed: the names are this test's alone.
        segment.remove();
        for ns in [&segment.lb, &segment.client] {
            run(&["netns", "add", ns]);
            run(&["-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "-n",
            &segment.lb,
            "link",
            "add",
            DEV,
            "type",
            "veth",
            "peer",
            "name",
            DEV,
            "netns",
            &segment.client,
        ]);
        for (ns, addresses) in [(&segment.lb, lb_addresses), (&segment.client, client_addresses)] {
            for address in addresses {
                let mut args = vec!["-n", ns, "address", "add", address, "dev", DEV];
                if address.contains(':') {
                    args.push("nodad");
                }
                run(&args);
            }
            run(&["-n", ns, "link", "set", DEV, "up"]);
        }
        segment.sysctl(&segment.lb, "net/ipv4/ip_nonlocal_bind", "1");
        segment.sysctl(&segment.lb, "net/ipv6/ip_nonlocal_bind", "1");
        Some(segment)
    }

    /// Writes `value` to `/proc/sys/<key>` inside namespace `ns`.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        let path = format!("/proc/sys/{key}");
        in_netns(ns, || {
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("writing {value} to {path} in {ns}: {e}"))
        });
    }

    /// `f` run in the LB host's namespace.
    pub fn in_lb<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.lb, f)
    }

    /// `f` run in the client's namespace.
    pub fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.client, f)
    }

    /// `ip -n <ns> <args>`, which must succeed.
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        let out = run(&all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The hardware address of the LB host's end of the segment (`aa:bb:..`).
    pub fn lb_mac(&self) -> String {
        let text = self.ip(&self.lb, &["-o", "link", "show", "dev", DEV]);
        word_after(&text, "link/ether").unwrap_or_else(|| panic!("no link/ether in {text:?}"))
    }

    /// The hardware address the client's neighbour table holds for `ip` on the segment, if any
    /// (an entry still being resolved, or one that failed, has none).
    pub fn client_neighbour(&self, ip: IpAddr) -> Option<String> {
        let text = self.ip(&self.client, &["neigh", "show", &ip.to_string(), "dev", DEV]);
        word_after(&text, "lladdr")
    }

    /// The addresses on the LB host's end of the segment, with their marks, as the applier reads
    /// them.
    pub fn lb_addresses(&self) -> Vec<flipbit_applier::addresses::netlink::Present> {
        self.in_lb(|| {
            let mut rtnl = flipbit_applier::addresses::netlink::Rtnl::open().expect("netlink");
            let link = rtnl.link(DEV).expect("netlink").expect("seg exists");
            rtnl.addresses(link.index).expect("netlink")
        })
    }

    fn remove(&self) {
        for ns in [&self.lb, &self.client] {
            if !std::path::Path::new("/run/netns").join(ns).exists() {
                continue;
            }
            // Whatever still runs in there was started by this test (nginx, named, an applier).
            let pids = Command::new("ip").args(["netns", "pids", ns]).output();
            for pid in pids
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: signals a process this test started inside its own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `f` on a thread that joined network namespace `name` (`/run/netns/<name>`); a panic in
/// `f` is the caller's.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: joins this thread (only) to the namespace the open descriptor names.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn run(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == key)?;
    words.next().map(str::to_owned)
}
