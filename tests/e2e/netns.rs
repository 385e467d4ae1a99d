//! Network namespaces for the end-to-end tests of the data plane: each test makes its own,
//! uniquely named, joined by veth pairs with private addresses, and deletes them (and kills
//! what it started in them) on drop, also when the test fails. Only root can do this; tests
//! that need it call [`can_run`] and skip, saying why, elsewhere.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why a namespace test cannot run here, if it cannot.
pub fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces); CI runs it as root".into());
    }
    for tool in ["ip", "wg", "wireguard-go", "wg-quick", "ping"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "needs `{tool}` (Debian: apt-get install iproute2 wireguard-tools wireguard-go iputils-ping)"
            ));
        }
    }
    None
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A namespace, deleted on drop with everything in it.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("weft-{tag}-{}-{n}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command in the namespace and waits for it; panics if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command in the namespace and returns its output, success or not.
    pub fn try_exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Starts a long-running process in the namespace, killed on drop (or by [`Netns::kill`]).
    pub fn spawn(&mut self, args: &[&str], envs: &[(&str, &str)], log: &Path) -> usize {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// The process id of a process started with [`Netns::spawn`] (`ip netns exec` execs
    /// the command, so it is the command's).
    pub fn pid(&self, which: usize) -> u32 {
        self.children[which].id()
    }

    /// How a process started with [`Netns::spawn`] ended, if it has.
    pub fn exited(&mut self, which: usize) -> Option<std::process::ExitStatus> {
        self.children[which].try_wait().ok().flatten()
    }

    /// SIGKILLs a process started with [`Netns::spawn`] and waits for it.
    pub fn kill(&mut self, which: usize) {
        let c = &mut self.children[which];
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kills whatever else still runs in it (wireguard-go daemonizes itself).
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins two namespaces (or a namespace and the root one, `None`) by a veth pair with the
/// given addresses (CIDR); returns the names of its ends in `a` and in `b`.
pub fn link(a: Option<&Netns>, a_addr: &str, b: &Netns, b_addr: &str) -> (String, String) {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let (ia, ib) = (
        format!("wv{}a{n}", std::process::id() % 10000),
        format!("wv{}b{n}", std::process::id() % 10000),
    );
    run(&[
        "ip", "link", "add", &ia, "type", "veth", "peer", "name", &ib,
    ]);
    run(&["ip", "link", "set", &ib, "netns", &b.name]);
    b.exec(&["ip", "addr", "add", b_addr, "dev", &ib]);
    b.exec(&["ip", "link", "set", &ib, "up"]);
    match a {
        Some(a) => {
            run(&["ip", "link", "set", &ia, "netns", &a.name]);
            a.exec(&["ip", "addr", "add", a_addr, "dev", &ia]);
            a.exec(&["ip", "link", "set", &ia, "up"]);
        }
        None => {
            // In the root namespace: deleted with its peer when `b` goes.
            run(&["ip", "addr", "add", a_addr, "dev", &ia]);
            run(&["ip", "link", "set", &ia, "up"]);
        }
    }
    (ia, ib)
}
