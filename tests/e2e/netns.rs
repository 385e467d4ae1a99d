//! Network namespaces for the end-to-end tests of the data plane: each test makes its own,
//! uniquely named, joined by veth pairs with private addresses, and deletes them (and kills
//! what it started in them) on drop, also when the test fails. A test process killed by a
//! signal runs no drop: the first namespace a later run makes sweeps away those left by runs
//! whose process is gone (their names carry its pid). Only root can do this; tests that need
//! it call [`can_run`] and skip, saying why, elsewhere.

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

/// The pid in a name `weft-<tag>-<pid>-<n>`, as [`Netns::new`] makes them.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("weft-")?;
    let mut parts = rest.rsplitn(3, '-');
    let (_n, pid) = (parts.next()?, parts.next()?);
    parts.next()?;
    pid.parse().ok()
}

/// Kills what runs in a namespace (wireguard-go daemonizes itself; agents outlive a killed
/// test) and deletes it, with the veth ends inside.
fn remove(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Removes the namespaces of test processes that no longer exist.
fn sweep_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "name" or "name (id: 3)"
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = owner(name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove(name);
        }
    }
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_orphans);
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
        remove(&self.name);
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

#[cfg(test)]
mod tests {
    // Paths, not a `use`: the meshplane bench includes this file and runs no tests.
    #[test]
    fn a_namespace_name_tells_its_owner() {
        assert_eq!(super::owner("weft-pair-4242-7"), Some(4242));
        assert_eq!(super::owner("weft-mesh-hub-4242-0"), Some(4242));
        assert_eq!(super::owner("weft-4242-0"), None);
        assert_eq!(super::owner("other-pair-4242-7"), None);
        assert_eq!(super::owner("weft-pair-x-7"), None);
    }
}
