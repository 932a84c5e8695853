//! `hookwall completions SHELL` and the man pages: both generated from the command line's own
//! clap definition, so they name exactly the commands and options the binary takes. The man
//! pages are written by the hidden `hookwall manpages DIR`, which `cargo xtask dist` runs to
//! put them in the Debian package.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap_complete::Shell;

use super::exit;

/// Writes the completion script for `shell` to `out`.
///
/// # Errors
/// If `out` cannot be written.
pub fn completions(cmd: clap::Command, shell: Shell, out: &mut dyn io::Write) -> io::Result<()> {
    let mut cmd = visible(&cmd);
    let name = cmd.get_name().to_owned();
    // clap_complete panics on a failed write; render to memory, then write with an error.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// A copy of `cmd` (the top command) without its hidden subcommands, which clap_complete would
/// otherwise offer: what completion needs (the name, version, arguments, the visible
/// subcommands with all of theirs), since clap cannot remove a subcommand from a command.
fn visible(cmd: &clap::Command) -> clap::Command {
    // clap takes only `'static` names: the binary's name is what the scripts complete.
    let mut copy = clap::Command::new("hookwall")
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if cmd.get_version().is_some() {
        copy = copy.version(crate::build_info::VERSION);
    }
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    copy
}

/// Writes one man page (section 1) for `cmd` and one for each of its visible subcommands, at
/// every depth (`hookwall-queue-list.1`), into `dir`, which is created if missing. Returns the
/// files written, the command's own first.
///
/// # Errors
/// If `dir` cannot be created or a page cannot be written.
pub fn manpages(cmd: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = without_help_subcommands(cmd);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &[], dir, &mut written)?;
    Ok(written)
}

/// `cmd` with clap's `help` subcommands turned off at every depth: `hookwall help` is not a
/// page of its own, and `--help` is everywhere anyway.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(cmd.disable_help_subcommand(true), |cmd, name| {
            cmd.mut_subcommand(name, without_help_subcommands)
        })
}

/// Writes the page of `cmd` (whose path below the top command is `path`), then its
/// subcommands' pages.
fn write_pages(
    cmd: &clap::Command,
    path: &[&str],
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("hookwall {}", crate::build_info::VERSION))
        .manual("hookwall manual");
    let file = dir.join(man.get_filename());
    let mut page = Vec::new();
    render(&man, cmd, path, &mut page)
        .with_context(|| format!("rendering the man page of {}", file.display()))?;
    fs::write(&file, page).with_context(|| format!("writing {}", file.display()))?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let mut sub_path = path.to_vec();
        sub_path.push(sub.get_name());
        write_pages(sub, &sub_path, dir, written)?;
    }
    Ok(())
}

/// clap_mangen's sections, with an EXIT STATUS section (from [`exit`]) instead of its EXTRA
/// section, which would run the `after_help` table's lines together into one paragraph.
fn render(
    man: &clap_mangen::Man,
    cmd: &clap::Command,
    path: &[&str],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    out.extend_from_slice(exit::roff(exit::of(path)).as_bytes());
    if cmd.get_version().is_some() || cmd.get_long_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}
