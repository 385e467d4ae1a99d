//! The systemd units in dist/systemd pass `systemd-analyze verify` without a warning (with
//! the binary path pointed at the one under test), and keep their hardening: no capability
//! for the controller, CAP_NET_ADMIN alone for the agent, a dedicated user, a read-only
//! system, state under /var/lib.

use crate::support::WEFT;
use std::path::Path;
use std::process::Command;

fn unit(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dist/systemd")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_units_verify_cleanly_and_stay_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["weft.service", "weft-agent.service"] {
        let text = unit(name);
        for line in [
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "Restart=on-failure",
        ] {
            assert!(text.lines().any(|l| l == line), "{name} lacks {line}");
        }
        let file = dir.path().join(name);
        std::fs::write(&file, text.replace("/usr/local/bin/weft", WEFT)).unwrap();
        files.push(file);
    }
    let controller = unit("weft.service");
    assert!(controller.contains("StateDirectory=weft\n"));
    assert!(controller.lines().any(|l| l == "CapabilityBoundingSet="));
    let agent = unit("weft-agent.service");
    assert!(agent.contains("StateDirectory=weft-agent\n"));
    assert!(
        agent
            .lines()
            .any(|l| l == "CapabilityBoundingSet=CAP_NET_ADMIN")
    );
    assert!(
        agent
            .lines()
            .any(|l| l == "AmbientCapabilities=CAP_NET_ADMIN")
    );

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze (Debian: apt-get install systemd; tests/run installs it)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // A bad value is only a warning to systemd: any line at all is a failure here.
    assert!(said.trim().is_empty(), "systemd-analyze warned:\n{said}");
}
