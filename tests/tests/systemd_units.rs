//! The systemd unit files in contrib/systemd, checked with `systemd-analyze verify` and against
//! what `hookwall run` expects of a socket it is handed (docs/operations.md, "Socket
//! activation").

use std::{path::PathBuf, process::Command};

fn contrib() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd")
}

#[test]
fn the_socket_unit_verifies_and_hands_the_https_listener_at_the_default_address() {
    let socket = std::fs::read_to_string(contrib().join("hookwall.socket"))
        .expect("reading contrib/systemd/hookwall.socket");
    let lines: Vec<&str> = socket.lines().map(str::trim).collect();
    // The name hookwall looks for, and the default `server.listen`: a socket elsewhere refuses
    // the start.
    assert!(lines.contains(&"FileDescriptorName=https"), "{socket}");
    assert!(lines.contains(&"ListenStream=0.0.0.0:443"), "{socket}");
    assert!(lines.contains(&"Service=hookwall.service"), "{socket}");
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("Accept=") && l != &"Accept=no"),
        "one listening socket for the service, not a process per connection: {socket}"
    );

    // verify loads the service the socket names: a stand-in beside a copy of the socket unit, so
    // that what is checked is the socket unit, not this machine's installation.
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("hookwall.socket"), &socket).expect("copying the unit");
    std::fs::write(
        dir.path().join("hookwall.service"),
        "[Service]\nExecStart=/bin/true\nSockets=hookwall.socket\n",
    )
    .expect("writing the stand-in service");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("hookwall.socket"))
        .current_dir(dir.path())
        .output()
        .expect("running systemd-analyze (cargo xtask setup installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("hookwall.socket"),
        "systemd-analyze verify hookwall.socket: {}\n{stderr}",
        out.status
    );
}
