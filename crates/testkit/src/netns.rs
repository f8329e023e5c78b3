//! A network namespace joined to the root namespace by veth pairs, for partition tests: a
//! process started in it reaches the root namespace only over those links, and a link can be
//! cut (silently: no reset, no ICMP, packets just vanish) and healed.
//!
//! Addresses are private /30s of `10.231.N.0/24`, with `N` picked at random among those the
//! root namespace does not use, so that nothing is ever sent outside loopback and these
//! links. Everything made here (the namespace, its links, the processes started in it by the
//! caller: they die with it once their handles are dropped) is removed on drop, also when the
//! test fails.
//!
//! Where namespaces cannot be made (not root, no `ip` from iproute2, a kernel or container
//! that refuses), [`Netns::create`] returns `None` after saying why on stderr; under CI (`CI`
//! set to anything but `false`) it panics instead.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// A network namespace of this test, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// The third octet of `10.231.N.0/24`, this namespace's.
    octet: u8,
    links: Vec<Veth>,
    /// The device that swallows what a cut link's traffic is routed to (no carrier, no ARP).
    sink: String,
}

/// A veth pair between the root namespace and a [`Netns`].
#[derive(Debug, Clone)]
pub struct Veth {
    /// The root namespace's end.
    pub root_if: String,
    /// The namespace's end.
    pub ns_if: String,
    /// The root end's address.
    pub root_addr: Ipv4Addr,
    /// The namespace end's address.
    pub ns_addr: Ipv4Addr,
    /// The /30 both are in, as `10.231.N.M/30`.
    pub subnet: String,
}

impl Netns {
    /// Makes a namespace named `<prefix>-<random>` with its loopback up, or says why it
    /// cannot (see the module's documentation).
    pub fn create(prefix: &str) -> Option<Netns> {
        let tag = random_tag();
        let name = format!("{prefix}-{tag}");
        if let Err(why) = usable(&name) {
            let ci = std::env::var("CI").is_ok_and(|v| v != "false");
            assert!(
                !ci,
                "network namespaces cannot be made here ({why}); CI needs them"
            );
            eprintln!("skipped: network namespaces cannot be made here ({why})");
            return None;
        }
        let ns = Netns {
            octet: free_octet(),
            links: Vec::new(),
            sink: format!("dxs{tag}"),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // The sink: one end of a veth pair inside the namespace, up, whose other end stays
        // down. Without a carrier it drops whatever is routed to it, and without ARP it never
        // reports a neighbour unreachable: a cut link's peer is routed there (see
        // [`Netns::cut`]). (A veth rather than a dummy device: kernels without the dummy
        // module are common in containers; veth pairs are needed anyway.)
        let peer = format!("{}p", ns.sink);
        ns.ip(&[
            "link", "add", &ns.sink, "type", "veth", "peer", "name", &peer,
        ]);
        ns.ip(&["link", "set", &ns.sink, "arp", "off", "up"]);
        Some(ns)
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new veth pair from the root namespace into this one, both ends up, with the next
    /// free /30 of this namespace's range.
    pub fn veth(&mut self) -> Veth {
        let index = self.links.len();
        assert!(index < 64, "at most 64 links per namespace");
        let base = (index * 4) as u8;
        let tag = &self.name[self.name.len() - 6..];
        let link = Veth {
            root_if: format!("dx{tag}r{index}"),
            ns_if: format!("dx{tag}n{index}"),
            root_addr: Ipv4Addr::new(10, 231, self.octet, base + 1),
            ns_addr: Ipv4Addr::new(10, 231, self.octet, base + 2),
            subnet: format!("10.231.{}.{base}/30", self.octet),
        };
        run(&[
            "link",
            "add",
            &link.root_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_if,
            "netns",
            &self.name,
        ]);
        // Recorded at once: a failure below still removes the pair on drop.
        self.links.push(link.clone());
        let root_addr = format!("{}/30", link.root_addr);
        let ns_addr = format!("{}/30", link.ns_addr);
        run(&["addr", "add", &root_addr, "dev", &link.root_if]);
        run(&["link", "set", &link.root_if, "up"]);
        self.ip(&["addr", "add", &ns_addr, "dev", &link.ns_if]);
        self.ip(&["link", "set", &link.ns_if, "up"]);
        // While the link is up, its own route (metric 0) wins over this one; once it is down,
        // this one takes the peer's traffic to the sink, which drops it without a word.
        self.ip(&[
            "route",
            "add",
            &link.subnet,
            "dev",
            &self.sink,
            "metric",
            "1000",
        ]);
        link
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`;
    /// `ip` execs it, so the child is the program itself).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Cuts `link` silently in both directions: the namespace's end goes down, so the root
    /// end loses its carrier and drops what is sent to the namespace (its route stays, so
    /// nothing goes out any other way), and what the namespace sends to the root end is
    /// routed to the sink, which drops it. Nobody gets a reset or an error: connections just stop
    /// hearing from each other, and new ones never finish opening.
    pub fn cut(&self, link: &Veth) {
        self.ip(&["link", "set", &link.ns_if, "down"]);
    }

    /// Brings a cut link back: connections that survived resume on their next retransmit.
    pub fn heal(&self, link: &Veth) {
        self.ip(&["link", "set", &link.ns_if, "up"]);
    }

    /// Runs `ip -n NAME ARGS`, panicking if it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the root ends removes the pairs at once, even while a process of the
        // namespace still holds it open.
        for link in &self.links {
            let _ = quiet(&["link", "del", &link.root_if]);
        }
        let _ = quiet(&["netns", "del", &self.name]);
    }
}

/// Why namespaces cannot be made here, trying with `name` (deleted again).
fn usable(name: &str) -> Result<(), String> {
    match quiet(&["netns", "add", name]) {
        Err(e) => Err(format!("cannot run ip (apt-get install iproute2): {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {
            // Veth pairs too (a kernel without them, or a container that forbids them).
            let tag = &name[name.len() - 6..];
            let (a, b) = (format!("dx{tag}ta"), format!("dx{tag}tb"));
            let probe = quiet(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            let _ = quiet(&["link", "del", &a]);
            match probe {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => {
                    let _ = quiet(&["netns", "del", name]);
                    Err(format!(
                        "ip link add type veth: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
                Err(e) => {
                    let _ = quiet(&["netns", "del", name]);
                    Err(e.to_string())
                }
            }
        }
    }
}

fn run(args: &[&str]) {
    let out = quiet(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn quiet(args: &[&str]) -> std::io::Result<Output> {
    Command::new("ip").args(args).stdin(Stdio::null()).output()
}

/// Six hex digits, different for each call (time, process and a counter).
fn random_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = nanos
        ^ std::process::id().rotate_left(13)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9);
    format!("{:06x}", mixed.wrapping_mul(0x85eb_ca6b) >> 8)
}

/// A third octet `N` such that nothing in the root namespace uses `10.231.N.0/24`.
fn free_octet() -> u8 {
    let used = |what: &[&str]| {
        quiet(what)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let taken =
        used(&["-4", "-o", "addr", "show"]) + &used(&["-4", "route", "show", "table", "all"]);
    let start = u8::from_str_radix(&random_tag()[..2], 16).unwrap_or(0);
    (0..=255u8)
        .map(|i| start.wrapping_add(i))
        .find(|n| !taken.contains(&format!("10.231.{n}.")))
        .expect("a free 10.231.N.0/24")
}
