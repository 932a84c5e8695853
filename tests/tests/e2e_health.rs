//! End-to-end tests of the health endpoints and the operational metrics against a live daemon:
//! `/healthz`, `/readyz`, `hookwall_build_info`, the certificate's expiry, the open-connection
//! gauge and `hookwall_filter_attached`, including a filter removed behind the daemon's back.
//!
//! Run as root: `cargo build -p hookwall --bins && cargo test -p hookwall-tests --test
//! e2e_health`.

use std::{
    ffi::CString,
    io,
    net::IpAddr,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use aya_obj::generated::bpf_cmd;

use hookwall_tests::{
    config::Route,
    daemon::{Daemon, hookwall, output_text, poll_until},
    https::connect_tls,
    lab::Lab,
    netns::{ALLOWED_V4, PROTECTED_PORT, srv_addr},
};

const GH: &str = "/hooks/github";

/// An HTTPS lab with one GitHub route.
fn lab() -> Lab {
    let mut lab = Lab::https("hw-health-");
    let secret = lab.write_secret("gh", "It's a Secret to Everybody");
    lab.spec.routes = vec![Route::signed(GH, "github", &[secret])];
    lab.write_config();
    lab
}

/// Waits until `/readyz` answers `status`; returns its body.
fn wait_readyz(daemon: &Daemon, status: u16) -> String {
    let last = std::cell::RefCell::new((0, String::new()));
    poll_until(
        Duration::from_secs(10),
        || {
            *last.borrow_mut() = daemon.get("/readyz");
            last.borrow().0 == status
        },
        || {
            format!(
                "/readyz never answered {status}; last {:?}; log:\n{}",
                last.borrow(),
                daemon.log()
            )
        },
    );
    last.into_inner().1
}

/// `hookwall_filter_attached{interface}`.
fn attached(daemon: &Daemon, interface: &str) -> f64 {
    daemon.metric("hookwall_filter_attached", &[("interface", interface)])
}

/// The value after `key: ` in `hookwall --version`'s output.
fn version_field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key:?} in hookwall --version: {text}"))
        .trim()
}

/// `BPF_LINK_DETACH` on the link pinned at `pin`, as `bpftool link detach` does: the program
/// leaves the interface, the link and its pin stay.
fn detach_link(pin: &Path) {
    /// `union bpf_attr` for `BPF_OBJ_GET`.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    /// `union bpf_attr` for `BPF_LINK_DETACH`.
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    let path = CString::new(pin.as_os_str().as_bytes()).expect("a pin path");
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a BPF_OBJ_GET attribute of its size; the path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET as libc::c_int,
            &raw mut get,
            size_of::<ObjGet>(),
        )
    };
    assert!(
        fd >= 0,
        "opening the link pin {}: {}",
        pin.display(),
        io::Error::last_os_error()
    );
    // SAFETY: BPF_OBJ_GET returned a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("an fd")) };
    let mut detach = LinkDetach {
        link_fd: u32::try_from(fd.as_raw_fd()).expect("an fd"),
    };
    // SAFETY: a BPF_LINK_DETACH attribute of its size, naming a link fd we hold.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_LINK_DETACH as libc::c_int,
            &raw mut detach,
            size_of::<LinkDetach>(),
        )
    };
    assert_eq!(done, 0, "BPF_LINK_DETACH: {}", io::Error::last_os_error());
}

/// The link pin of `iface` under the lab's pins.
fn link_pin(lab: &Lab, iface: &str) -> PathBuf {
    let links = lab.pins.path().join("links");
    std::fs::read_dir(&links)
        .expect("the link pins")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{iface}")))
        })
        .unwrap_or_else(|| panic!("no link pin for {iface} in {}", links.display()))
}

/// The notAfter, in Unix seconds, of the first certificate in the PEM file at `path`.
fn not_after(path: &std::path::Path) -> i64 {
    let pem = std::fs::read(path).expect("reading the certificate the test wrote");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("a PEM block");
    let cert = pem.parse_x509().expect("an X.509 certificate");
    cert.validity().not_after.timestamp()
}

#[test]
fn health_and_operational_metrics_follow_the_live_daemon() {
    let lab = lab();
    let mut daemon = lab.start();
    let iface = lab.net.srv_if().to_owned();

    // Liveness and readiness once up.
    assert_eq!(daemon.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(wait_readyz(&daemon, 200), "ok\n");

    // This build, as `hookwall --version` reports it.
    let out = hookwall(&["--version"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no version in {text}"));
    let digest = version_field(&text, "program-sha256");
    assert_eq!(digest.len(), 64, "{text}");
    let scrape = daemon.metrics();
    assert_eq!(
        hookwall_tests::daemon::metric_value(
            &scrape,
            "hookwall_build_info",
            &[
                ("version", version),
                ("revision", version_field(&text, "revision")),
                ("program_sha256", digest),
            ],
        ),
        1.0,
        "{scrape}"
    );

    // The expiry of the certificate the test wrote and the daemon serves.
    let (cert, _) = lab.spec.tls.as_ref().expect("an HTTPS lab");
    #[expect(clippy::cast_precision_loss, reason = "Unix seconds fit f64 exactly")]
    let expected = not_after(cert) as f64;
    assert_eq!(
        hookwall_tests::daemon::metric_value(
            &scrape,
            "hookwall_tls_certificate_not_after_timestamp_seconds",
            &[],
        ),
        expected
    );

    // A connection held open is counted while it is open, and not after.
    let gauge = "hookwall_http_connections_open";
    daemon.wait_metric(gauge, &[], Duration::from_secs(10), |v| v == 0.0);
    let src = IpAddr::V4(ALLOWED_V4);
    let client = std::sync::Arc::clone(lab.client());
    let held = lab
        .net
        .cli
        .run(move || connect_tls(src, srv_addr(src, PROTECTED_PORT), &client))
        .expect("a TLS connection to the receiver");
    daemon.wait_metric(gauge, &[], Duration::from_secs(5), |v| v == 1.0);
    drop(held);
    daemon.wait_metric(gauge, &[], Duration::from_secs(10), |v| v == 0.0);

    // Attached on the configured interface.
    assert_eq!(attached(&daemon, &iface), 1.0);
    assert!(lab.net.srv.xdp_on(&iface).is_some());

    // Removed behind the daemon's back. The attachment is a pinned bpf_link, which `ip link set
    // dev IF xdp off` cannot remove (the kernel refuses to replace an active XDP link); the
    // link's pin is its only reference, so removing the pin detaches the program.
    let off = std::process::Command::new("ip")
        .args([
            "-n",
            lab.net.srv.name(),
            "link",
            "set",
            "dev",
            &iface,
            "xdp",
            "off",
        ])
        .output()
        .expect("running ip");
    eprintln!("ip link set dev {iface} xdp off: {}", output_text(&off));
    assert!(
        lab.net.srv.xdp_on(&iface).is_some(),
        "ip removed a pinned XDP link; this test's premise is wrong"
    );
    let links = lab.pins.path().join("links");
    std::fs::remove_file(link_pin(&lab, &iface)).expect("removing the link pin");
    poll_until(
        Duration::from_secs(5),
        || lab.net.srv.xdp_on(&iface).is_none(),
        || format!("{iface} still has XDP after its link pin was removed"),
    );

    let body = wait_readyz(&daemon, 503);
    assert_eq!(
        body.lines().collect::<Vec<_>>(),
        [format!(
            "filter: not attached on {iface}: no link is pinned for it in {}",
            links.display()
        )],
        "{body}"
    );
    assert_eq!(attached(&daemon, &iface), 0.0);
    // Still alive: a liveness probe must not restart a daemon that a reload can repair.
    assert_eq!(daemon.get("/healthz").0, 200);

    // A reload attaches it again.
    daemon.hup();
    assert_eq!(wait_readyz(&daemon, 200), "ok\n");
    assert_eq!(attached(&daemon, &iface), 1.0);
    assert!(lab.net.srv.xdp_on(&iface).is_some());

    // Detached in the kernel while its pin stays (`bpftool link detach`): the pin alone does
    // not make it attached.
    let pin = link_pin(&lab, &iface);
    detach_link(&pin);
    assert!(pin.exists());
    poll_until(
        Duration::from_secs(5),
        || lab.net.srv.xdp_on(&iface).is_none(),
        || format!("{iface} still has XDP after BPF_LINK_DETACH"),
    );
    let body = wait_readyz(&daemon, 503);
    assert_eq!(
        body.lines().collect::<Vec<_>>(),
        [format!(
            "filter: not attached on {iface}: its pinned link is detached (the interface was \
             removed, or the link was detached)"
        )],
        "{body}"
    );
    assert_eq!(attached(&daemon, &iface), 0.0);
    // A reload replaces the detached link.
    daemon.hup();
    assert_eq!(wait_readyz(&daemon, 200), "ok\n");
    assert_eq!(attached(&daemon, &iface), 1.0);
    assert!(lab.net.srv.xdp_on(&iface).is_some());
}
