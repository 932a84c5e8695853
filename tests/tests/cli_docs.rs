//! The completion scripts and man pages the `hookwall` binary generates from its own command
//! line: every subcommand (found in the binary's `--help`, at every depth) is completed in bash,
//! zsh and fish and has a man page that man renders without a warning; the bash script parses;
//! each command's help and man page end with its exit statuses.
//!
//! Needs no root: `cargo build -p hookwall --bins && cargo test -p hookwall-tests --test
//! cli_docs`.

use std::{path::Path, process::Command};

use hookwall_tests::daemon::hookwall_command;

/// Runs `hookwall ARGS`; panics unless it succeeds; returns its standard output.
fn hookwall(args: &[&str]) -> String {
    let out = hookwall_command(args)
        .output()
        .unwrap_or_else(|e| panic!("running hookwall {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "hookwall {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The names in the `Commands:` section of a clap help text, without `help`.
fn commands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path below `hookwall`, as its `--help` lists them: `[]`, `["run"]`, ...,
/// `["queue", "list"]`.
fn command_paths() -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    let mut at = 0;
    while at < paths.len() {
        let path: Vec<String> = paths[at].clone();
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        for name in commands_in_help(&hookwall(&args)) {
            let mut sub = path.clone();
            sub.push(name);
            paths.push(sub);
        }
        at += 1;
    }
    paths
}

#[test]
fn help_lists_the_subcommands_the_generators_must_cover() {
    let paths = command_paths();
    let names: Vec<String> = paths.iter().map(|p| p.join(" ")).collect();
    for expected in ["", "run", "check", "queue", "queue list", "completions"] {
        assert!(
            names.iter().any(|n| n == expected),
            "`{expected}` not found in the help texts: {names:?}"
        );
    }
    // The generator of the package's man pages is not offered to operators.
    assert!(!names.iter().any(|n| n == "manpages"), "{names:?}");
}

#[test]
fn completion_scripts_name_every_subcommand() {
    let paths = command_paths();
    for shell in ["bash", "zsh", "fish"] {
        let script = hookwall(&["completions", shell]);
        for path in paths.iter().filter(|p| !p.is_empty()) {
            let name = path.last().expect("a subcommand");
            assert!(
                script.contains(name.as_str()),
                "the {shell} completions do not name `{}`",
                path.join(" ")
            );
        }
        assert!(
            !script.contains("manpages"),
            "the {shell} completions offer the hidden `manpages`"
        );
    }
}

#[test]
fn the_bash_completion_script_parses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("hookwall.bash");
    std::fs::write(&script, hookwall(&["completions", "bash"])).expect("writing the script");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("running bash -n");
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = hookwall_command(&["completions", "cmd.exe"])
        .output()
        .expect("running hookwall");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

/// Renders `page` with man, warnings on; returns its text and what man and groff said on
/// standard error.
fn render_man_page(page: &Path) -> (String, String) {
    let out = Command::new("man")
        .arg("--warnings")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .expect("running man (installed by `cargo xtask setup`: man-db, groff-base)");
    assert!(out.status.success(), "man -l {}: {out:?}", page.display());
    (
        without_overstrike(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` without the backspace overstrikes man uses for bold and underline when its output
/// is not a terminal (`N\x08N` is a bold N).
fn without_overstrike(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn every_subcommand_has_a_man_page_that_renders_without_warnings() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written = hookwall(&["manpages", dir.path().to_str().expect("UTF-8 path")]);
    for path in command_paths() {
        let name = std::iter::once("hookwall")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-");
        let page = dir.path().join(format!("{name}.1"));
        assert!(page.is_file(), "no man page {name}.1; written:\n{written}");
        let (text, warnings) = render_man_page(&page);
        assert!(
            warnings.trim().is_empty(),
            "{name}.1 renders with warnings:\n{warnings}"
        );
        assert!(text.contains("NAME"), "{name}.1:\n{text}");
        assert!(
            text.contains("EXIT STATUS"),
            "{name}.1 has no exit statuses:\n{text}"
        );
        for code in ["0", "1", "2"] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(code)),
                "{name}.1 does not explain exit status {code}:\n{text}"
            );
        }
    }
    assert!(!dir.path().join("hookwall-manpages.1").exists());
    assert!(!dir.path().join("hookwall-help.1").exists());
}

#[test]
fn every_help_ends_with_the_exit_statuses() {
    for path in command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = hookwall(&args);
        let table = help.split("Exit status:").nth(1).unwrap_or_else(|| {
            panic!(
                "`hookwall {}` has no exit statuses:\n{help}",
                path.join(" ")
            )
        });
        for code in ["  0  ", "  1  ", "  2  "] {
            assert!(
                table.contains(code),
                "`hookwall {}`: {table}",
                path.join(" ")
            );
        }
    }
}
