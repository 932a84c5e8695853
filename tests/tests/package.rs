//! The Debian package, installed and purged with the real dpkg on this machine.
//!
//! `cargo xtask test` builds the package once (`cargo xtask dist`'s steps) and names it in
//! `HOOKWALL_DEB`; without it this test fails, saying how to run it. It refuses to run, failing,
//! where a `hookwall` package is already installed or where the paths the package owns or its
//! scripts remove already exist (`/etc/hookwall`, `/var/lib/hookwall`, the default pin path):
//! it would replace or purge someone else's. Whatever happens, the package is purged at the
//! end ([`Installed`]'s drop), and the `hookwall` system user it made is removed.
//!
//! What it checks, in order: `dpkg -i`; the installed `hookwall --version` is this build's; the
//! installed example config passes `hookwall check` in a test namespace that has its interface,
//! with the credentials it names in a `CREDENTIALS_DIRECTORY` the test fills; the installed unit
//! passes `systemd-analyze verify` with nothing to say and `systemd-analyze security
//! --offline=true` scores it (printed; it must stay "OK", below 4.0); the installed daemon comes
//! up under exactly the unit's capability bounding set with no_new_privs, as the package's
//! `hookwall` user, twice (a new filter, then the pinned one re-adopted); the man pages and
//! completions are where Debian's man and shells look and work there; `dpkg --purge` leaves
//! nothing of what the package installed or its scripts made, but the system user (Debian
//! keeps package users on purge: files elsewhere may still be theirs).
//!
//! Run as root: `cargo xtask dist`, then `HOOKWALL_DEB=PATH HOOKWALL_BIN=$CARGO_TARGET_DIR/
//! debug/hookwall cargo test -p hookwall-tests --test package -- --nocapture`.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use hookwall_tests::{
    daemon::{NsEntry, hookwall_command, poll_until, strip_ansi},
    netns::NetNs,
    unique_name,
};

const UNIT: &str = "/usr/lib/systemd/system/hookwall.service";
const CONFIG: &str = "/etc/hookwall/hookwall.toml";
/// The interface the example config names, made in the test namespace.
const EXAMPLE_INTERFACE: &str = "eth0";
/// Highest `systemd-analyze security` exposure accepted: systemd calls below 4.0 "OK".
const MAX_EXPOSURE: f64 = 4.0;

/// The package `cargo xtask test` built, from `HOOKWALL_DEB`.
fn package() -> PathBuf {
    let Some(path) = std::env::var_os("HOOKWALL_DEB") else {
        panic!(
            "HOOKWALL_DEB is not set: this test installs the Debian package that `cargo xtask \
             test` builds and names there. Run `cargo xtask test`, or `cargo xtask dist` and \
             then HOOKWALL_DEB=target/debian/hookwall_VERSION_ARCH.deb cargo test -p \
             hookwall-tests --test package"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "HOOKWALL_DEB names {}, which is not a file (run `cargo xtask dist`)",
        path.display()
    );
    path
}

#[test]
fn the_package_installs_checks_starts_under_the_units_capabilities_and_purges_clean() {
    let deb = package();
    let installed = Installed::install(&deb);
    let owned = dpkg_paths();
    assert!(
        owned.contains(Path::new("/usr/bin/hookwall")),
        "dpkg -L hookwall: {owned:?}"
    );

    the_version_is_this_builds();
    the_example_config_passes_check();
    the_unit_verifies_and_scores(MAX_EXPOSURE);
    the_daemon_starts_under_the_units_bounding_set();
    man_pages_and_completions_are_in_place(&owned);

    installed.purge_and_check(&owned);
}

/// `/usr/bin/hookwall --version` says what the binary of this build says: version, git revision,
/// program digest.
fn the_version_is_this_builds() {
    let installed = output_ok(Command::new("/usr/bin/hookwall").arg("--version"));
    let built = output_ok(&mut hookwall_command(&["--version"]));
    assert_eq!(
        installed, built,
        "the installed hookwall is not this build (built from another tree or commit?)"
    );
    assert!(installed.starts_with(&format!("hookwall {}\n", hookwall::build_info::VERSION)));
    assert!(installed.contains("program-sha256: "), "{installed}");
}

/// The installed example passes `hookwall check` where its interface exists and its
/// credentials are set, and names the package's user.
fn the_example_config_passes_check() {
    let text = std::fs::read_to_string(CONFIG).expect("reading the installed config");
    let names = credentials_named(&text);
    assert!(
        names.len() >= 2,
        "the example names its secrets as credentials: {names:?}"
    );
    let credentials = tempfile::tempdir().expect("temp dir");
    for name in &names {
        // Long and random enough for the token strength check.
        let value = format!("whsec_{}", "Q2hlY2tpbmcgdGhlIHBhY2thZ2UncyBleGFtcGxlIQ");
        let path = credentials.path().join(name);
        std::fs::write(&path, value).expect("writing a credential");
    }
    let ns = NetNs::new("hw-pkg-");
    ns.ip(&[
        "link",
        "add",
        EXAMPLE_INTERFACE,
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
    ]);
    let mut check = Command::new("/usr/bin/hookwall");
    check
        .args(["check", "-c", CONFIG])
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .env("NO_COLOR", "1");
    let entry = NsEntry::new(&ns);
    entry.apply(&mut check);
    let out = check.output().expect("running hookwall check");
    assert!(
        out.status.success(),
        "hookwall check -c {CONFIG} in a namespace with {EXAMPLE_INTERFACE}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{CONFIG}: valid")), "{stdout}");
    assert!(stdout.contains("run as            hookwall"), "{stdout}");
}

/// `systemd-analyze verify` has nothing to say about the unit; `security --offline=true`
/// scores it below `max`. Both work where systemd is not PID 1.
fn the_unit_verifies_and_scores(max: f64) {
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("running systemd-analyze (installed by `cargo xtask setup`: systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{said}",
        verify.status
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output()
        .expect("running systemd-analyze security");
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hookwall.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in `systemd-analyze security --offline=true {UNIT}`:\n{text}{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    println!("systemd-analyze security --offline=true: exposure {score}");
    assert!(
        score < max,
        "the unit's exposure is {score}, at or above {max}:\n{text}"
    );
}

/// The installed daemon starts, as the package's user, with exactly the unit's bounding set
/// and no_new_privs: a new filter, then the pinned one re-adopted (the store is then the
/// user's, which root opens at start).
fn the_daemon_starts_under_the_units_bounding_set() {
    let unit = std::fs::read_to_string(UNIT).expect("reading the unit");
    let caps = bounding_set_of(&unit);
    assert!(caps.contains(&"CAP_BPF".to_owned()), "{caps:?}");
    let run = CapsRun::new(&caps);
    let first = run.start_and_stop();
    assert!(first.contains("loaded a new filter"), "{first}");
    let second = run.start_and_stop();
    assert!(second.contains("re-adopted the pinned filter"), "{second}");
}

/// The man pages are gzipped in /usr/share/man/man1 and man finds and renders them without a
/// warning; each shell's completion script is where that shell's Debian package looks; bash's
/// parses.
fn man_pages_and_completions_are_in_place(owned: &BTreeSet<PathBuf>) {
    let pages: Vec<&PathBuf> = owned
        .iter()
        .filter(|p| p.starts_with("/usr/share/man/man1"))
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    for name in [
        "hookwall",
        "hookwall-run",
        "hookwall-check",
        "hookwall-queue-list",
    ] {
        let page = PathBuf::from(format!("/usr/share/man/man1/{name}.1.gz"));
        assert!(
            pages.contains(&&page),
            "{} not installed: {pages:?}",
            page.display()
        );
        // By name, as an operator types it: found through man's own search path.
        let (text, warnings) = render_man(&[name]);
        assert!(warnings.trim().is_empty(), "man {name}: {warnings}");
        assert!(text.contains("EXIT STATUS"), "man {name}:\n{text}");
    }
    for page in &pages {
        let (_, warnings) = render_man(&["-l", page.to_str().expect("UTF-8 path")]);
        assert!(
            warnings.trim().is_empty(),
            "man -l {}: {warnings}",
            page.display()
        );
    }
    for file in [
        "/usr/share/bash-completion/completions/hookwall",
        "/usr/share/zsh/vendor-completions/_hookwall",
        "/usr/share/fish/vendor_completions.d/hookwall.fish",
    ] {
        assert!(owned.contains(Path::new(file)), "{file} not installed");
        let script = std::fs::read_to_string(file).expect("reading a completion script");
        for sub in ["run", "check", "status", "detach", "queue", "completions"] {
            assert!(script.contains(sub), "{file} does not complete `{sub}`");
        }
    }
    let bash: Output = Command::new("bash")
        .args(["-n", "/usr/share/bash-completion/completions/hookwall"])
        .output()
        .expect("running bash -n");
    assert!(bash.status.success(), "bash -n: {bash:?}");
    for file in [
        "/usr/share/hookwall/grafana/hookwall.json",
        "/usr/share/hookwall/prometheus/alerts.yml",
        "/usr/share/hookwall/prometheus/recording.yml",
        UNIT,
        CONFIG,
    ] {
        assert!(owned.contains(Path::new(file)), "{file} not installed");
    }
}

// --- The package on this machine ----------------------------------------------------------

/// Paths the package or its scripts make or remove, which must not be someone else's.
const CLAIMED: [&str; 3] = ["/etc/hookwall", "/var/lib/hookwall", "/sys/fs/bpf/hookwall"];

/// The package, installed by this test; purged on drop (also when the test fails), with the
/// system user its postinst made.
struct Installed {
    /// Whether user `hookwall` was absent before the install (then the package made it, and
    /// the test removes it at the end).
    user_made: bool,
    /// The paths in the package that existed before the install (`/usr`, `/etc`, ...).
    existed: BTreeSet<PathBuf>,
}

impl Installed {
    /// Refuses, failing, if the machine has a hookwall package or paths it would take; then
    /// `dpkg -i deb`.
    fn install(deb: &Path) -> Self {
        if let Some(status) = dpkg_status() {
            panic!(
                "a hookwall package is already on this machine (dpkg status `{status}`), not \
                 installed by this test: the test installs and purges its own and will not \
                 touch it. Remove it (`dpkg --purge hookwall`) or run the test on another machine"
            );
        }
        for path in CLAIMED {
            assert!(
                !Path::new(path).exists(),
                "{path} exists: the package's scripts would change or remove it (a hookwall \
                 installed by hand, or a run of `hookwall run` with the default pin path?); \
                 the test will not touch it. Remove it or run the test on another machine"
            );
        }
        let user_made = !user_exists("hookwall");
        let contents = package_contents(deb);
        assert!(
            contents.contains(&PathBuf::from("/usr/bin/hookwall")),
            "dpkg-deb -c {}: {contents:?}",
            deb.display()
        );
        let existed = contents.into_iter().filter(|p| p.exists()).collect();
        let installed = Self { user_made, existed };
        // From here on the drop purges whatever dpkg managed to do.
        let out = Command::new("dpkg")
            .arg("-i")
            .arg(deb)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("running dpkg -i");
        assert!(
            out.status.success(),
            "dpkg -i {}: {}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
        installed
    }

    /// `dpkg --purge hookwall`, then: nothing the package installed is left but the directories
    /// that were there before it, nor what its scripts and the daemon made; the system user
    /// stays, as Debian keeps package users.
    fn purge_and_check(self, owned: &BTreeSet<PathBuf>) {
        purge();
        assert_eq!(
            dpkg_status(),
            None,
            "hookwall is still known to dpkg after the purge"
        );
        let left: Vec<&PathBuf> = owned
            .iter()
            .filter(|p| !self.existed.contains(*p))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect();
        assert!(left.is_empty(), "left after dpkg --purge: {left:?}");
        for path in CLAIMED {
            assert!(
                !Path::new(path).exists(),
                "{path} is left after dpkg --purge"
            );
        }
        if self.user_made {
            assert!(
                user_exists("hookwall"),
                "the purge removed user hookwall; Debian keeps the users packages make"
            );
        }
        // The drop removes the user the package made.
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            purge();
        }
        if self.user_made && user_exists("hookwall") {
            match Command::new("userdel").arg("hookwall").output() {
                Ok(out) if out.status.success() => {}
                other => eprintln!("removing user hookwall: {other:?}"),
            }
            // userdel removes the user's own group where login.defs says USERGROUPS_ENAB.
            if Command::new("getent")
                .args(["group", "hookwall"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                let _ = Command::new("groupdel").arg("hookwall").output();
            }
        }
    }
}

/// `dpkg --purge hookwall`, failing with its output.
fn purge() {
    let out = Command::new("dpkg")
        .args(["--purge", "hookwall"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("running dpkg --purge");
    assert!(
        out.status.success(),
        "dpkg --purge hookwall: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dpkg's status of package hookwall, or `None` when dpkg does not know it (never installed,
/// or purged).
fn dpkg_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "hookwall"])
        .output()
        .expect("running dpkg-query");
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !status.is_empty() && status != "unknown ok not-installed")
        .then_some(status)
}

/// `dpkg -L hookwall`: every path the installed package owns.
fn dpkg_paths() -> BTreeSet<PathBuf> {
    output_ok(Command::new("dpkg").args(["-L", "hookwall"]))
        .lines()
        .filter(|l| l.starts_with('/') && *l != "/.")
        .map(PathBuf::from)
        .collect()
}

/// The paths in `deb`, from `dpkg-deb -c` (`./usr/bin/hookwall` as `/usr/bin/hookwall`).
fn package_contents(deb: &Path) -> Vec<PathBuf> {
    output_ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.strip_prefix('.'))
        .map(|p| PathBuf::from(p.trim_end_matches('/')))
        .filter(|p| p != Path::new(""))
        .collect()
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd`; panics unless it succeeds; returns its standard output.
fn output_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `man --warnings ARGS`: the page as text (without the overstrikes man uses for bold when it
/// writes to a pipe), and what man and groff said on standard error.
fn render_man(args: &[&str]) -> (String, String) {
    let out = Command::new("man")
        .arg("--warnings")
        .args(args)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .expect("running man (installed by `cargo xtask setup`: man-db, groff-base)");
    assert!(out.status.success(), "man {}: {out:?}", args.join(" "));
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    (text, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The names in the config's `{ credential = "NAME" }` secrets.
fn credentials_named(config: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in config.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("credential = \"") {
            rest = &rest[at + "credential = \"".len()..];
            if let Some(end) = rest.find('"') {
                names.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The capabilities of the unit's `CapabilityBoundingSet=` line(s).
fn bounding_set_of(unit: &str) -> Vec<String> {
    let caps: Vec<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect();
    assert!(
        !caps.is_empty(),
        "the unit sets no CapabilityBoundingSet=:\n{unit}"
    );
    caps
}

// --- The daemon under the unit's bounding set -----------------------------------------------

/// The installed daemon run as systemd would start it: exactly the unit's bounding set,
/// nothing inheritable, no_new_privs (through setpriv), in a test namespace with the veth
/// its config names, with `daemon.run_as = "hookwall"` (the package's user), port 443 and a
/// store in a directory that does not exist yet. Its pins are removed on drop.
struct CapsRun {
    ns: NetNs,
    dir: tempfile::TempDir,
    config: PathBuf,
    pin_path: PathBuf,
    bounding: String,
}

impl CapsRun {
    fn new(caps: &[String]) -> Self {
        let ns = NetNs::new("hw-pkgcap-");
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        for dev in ["eth0", "eth1"] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
        let dir = tempfile::tempdir().expect("temp dir");
        // The daemon's user reads the config at reloads and passes through to the store.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let token = dir.path().join("mpesa-token");
        fs::write(&token, "tok3n-Pv7cR2mX9qL4wT8yK1sB6nD0fH5jZ").expect("writing the token");
        let chown = Command::new("chown")
            .arg("hookwall:")
            .arg(&token)
            .status()
            .expect("running chown");
        assert!(chown.success(), "chown hookwall: {}", token.display());
        let pin_path = PathBuf::from("/sys/fs/bpf").join(unique_name("hw-pkgcap-"));
        let config = dir.path().join("hookwall.toml");
        let text = format!(
            r#"[filter]
interfaces = ["eth0"]
pin_path = "{pins}"

[server]
listen = "192.0.2.1:443"
tls = "self-signed"

[store]
path = "{store}"

[metrics]
listen = "192.0.2.1:9184"

[daemon]
run_as = "hookwall"

[[route]]
path = "/mpesa/c2b/confirmation"
verify = "mpesa"
token = {{ file = "{token}" }}
"#,
            pins = pin_path.display(),
            store = dir.path().join("store/events.db").display(),
            token = token.display(),
        );
        fs::write(&config, text).expect("writing the config");
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).expect("chmod");
        // setpriv's names: CAP_NET_BIND_SERVICE is net_bind_service.
        let bounding = std::iter::once("-all".to_owned())
            .chain(
                caps.iter()
                    .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())),
            )
            .collect::<Vec<_>>()
            .join(",");
        Self {
            ns,
            dir,
            config,
            pin_path,
            bounding,
        }
    }

    /// Starts the daemon, waits until it has dropped to the run_as user (or ended), stops it
    /// with SIGTERM and returns its log; fails unless it came up and stopped with status 0.
    fn start_and_stop(&self) -> String {
        let log = self.dir.path().join("daemon.log");
        let file = fs::File::create(&log).expect("creating the log");
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--bounding-set={}", self.bounding))
            .args([
                "--inh-caps=-all",
                "--no-new-privs",
                "/usr/bin/hookwall",
                "run",
                "-c",
            ])
            .arg(&self.config)
            .env("NO_COLOR", "1")
            .env("HOOKWALL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        let entry = NsEntry::new(&self.ns);
        entry.apply(&mut cmd);
        let child = cmd.spawn().expect("starting setpriv hookwall run");
        let mut running = Running(child);
        let read = || strip_ansi(&fs::read_to_string(&log).unwrap_or_default());
        let mut ended = None;
        poll_until(
            Duration::from_secs(60),
            || {
                ended = running.0.try_wait().expect("waiting for the daemon");
                ended.is_some() || read().contains("dropped the privileges only the start needed")
            },
            || format!("the daemon neither came up nor ended:\n{}", read()),
        );
        assert!(
            ended.is_none(),
            "the daemon ended ({ended:?}) under the bounding set {}:\n{}",
            self.bounding,
            read()
        );
        let status = fs::read_to_string(format!("/proc/{}/status", running.0.id()))
            .expect("reading the daemon's status");
        let uid = output_ok(Command::new("id").args(["-u", "hookwall"]));
        let uid_line = format!("Uid:\t{0}\t{0}\t{0}\t{0}", uid.trim());
        assert!(
            status.contains(&uid_line),
            "not running as hookwall:\n{status}"
        );
        assert!(status.contains("CapBnd:\t0000008000000000"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        // SAFETY: kill with a PID this test started and has not reaped.
        let pid = libc::pid_t::try_from(running.0.id()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let exit = running.0.wait().expect("waiting for the daemon");
        assert!(
            exit.success(),
            "the daemon stopped with {exit}:\n{}",
            read()
        );
        read()
    }
}

impl Drop for CapsRun {
    fn drop(&mut self) {
        let out = Command::new("/usr/bin/hookwall")
            .args(["detach", "--pin-path"])
            .arg(&self.pin_path)
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("detaching {}: {out:?}", self.pin_path.display());
        }
    }
}

/// A started daemon; killed (SIGKILL, by PID) on drop if the test did not reap it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
