//! `cargo xtask dist`: the release binary and the Debian package.
//!
//! The package is made by cargo-deb from `[package.metadata.deb]` in filter-user/Cargo.toml. What
//! it holds beyond files of the repository is generated here first, from the release binary
//! itself, into `target/release/dist/` (which the metadata names as `target/release/...`, the
//! prefix cargo-deb resolves to the real target directory): the man pages (`hookwall manpages`),
//! gzipped as Debian policy wants them (cargo-deb compresses man pages only when they are not
//! under the target directory), and the completion scripts (`hookwall completions SHELL`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cargo, run_cmd, setup, stdout_of, target_dir};

/// The completion scripts: the shell, and the file name the package's asset list expects.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "hookwall.bash"),
    ("zsh", "_hookwall"),
    ("fish", "hookwall.fish"),
];

/// Sets up, then builds the package; prints its path and size.
pub fn dist() -> Result<()> {
    setup::setup()?;
    build_package()?;
    Ok(())
}

/// Builds the release binary, generates the man pages and completions, and makes the .deb;
/// returns its path. Does not run setup (the caller did).
pub fn build_package() -> Result<PathBuf> {
    println!("==> dist: release build");
    run_cmd(cargo().args(["build", "--release", "--locked", "-p", "hookwall", "--bins"]))
        .context("building the release binary")?;
    let release = target_dir().join("release");
    let bin = release.join("hookwall");
    let dist = release.join("dist");
    generate(&bin, &dist)?;

    println!(
        "==> dist: Debian package (cargo-deb {})",
        setup::CARGO_DEB_VERSION
    );
    let out_dir = target_dir().join("debian");
    let mut deb = cargo();
    deb.args([
        "deb",
        "-p",
        "hookwall",
        "--no-build",
        "--locked",
        "--strip",
        "--output",
    ])
    .arg(&out_dir);
    println!("    $ {}", crate::display(&deb));
    let printed = stdout_of(&mut deb).context("making the Debian package with cargo-deb")?;
    let path = package_path(&printed).with_context(|| {
        format!("cargo-deb did not print the path of the package it made; it printed: {printed}")
    })?;
    let size = fs::metadata(&path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    println!(
        "package: {} ({} bytes, {:.1} MiB)",
        path.display(),
        size,
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(path)
}

/// Writes the man pages into `dist/man/` and the completion scripts into `dist/completions/`,
/// from `bin`, after emptying `dist` (a page of a subcommand since removed must not linger).
fn generate(bin: &Path, dist: &Path) -> Result<()> {
    if dist.exists() {
        fs::remove_dir_all(dist).with_context(|| format!("emptying {}", dist.display()))?;
    }
    let man = dist.join("man");
    let pages = stdout_of(Command::new(bin).arg("manpages").arg(&man))
        .context("generating the man pages")?;
    ensure!(
        pages.lines().count() > 1,
        "`hookwall manpages` wrote no subcommand's page: {pages}"
    );
    // -n: no name or time stamp in the header, so the same page gives the same bytes.
    run_cmd(
        Command::new("gzip")
            .args(["-9", "-n", "-f"])
            .args(pages.lines()),
    )
    .context("compressing the man pages")?;
    println!(
        "generated {} man pages in {}",
        pages.lines().count(),
        man.display()
    );
    let completions = dist.join("completions");
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for (shell, file) in COMPLETIONS {
        let script = stdout_of(Command::new(bin).args(["completions", shell]))
            .with_context(|| format!("generating the {shell} completions"))?;
        let path = completions.join(file);
        fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "generated bash, zsh and fish completions in {}",
        completions.display()
    );
    Ok(())
}

/// The `.deb` path in cargo-deb's standard output: its last line that ends in `.deb`.
fn package_path(stdout: &str) -> Result<PathBuf> {
    let Some(line) = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
    else {
        bail!("no line ending in .deb");
    };
    let path = PathBuf::from(line);
    ensure!(path.is_file(), "{} is not a file", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_path_is_the_last_deb_line_and_must_exist() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("hookwall_0.1.0-1_amd64.deb");
        fs::write(&deb, b"!<arch>\n").unwrap();
        let printed = format!("warning: something\n{}\n", deb.display());
        assert_eq!(package_path(&printed).unwrap(), deb);
        assert!(package_path("no package here\n").is_err());
        assert!(package_path("/nonexistent/hookwall.deb\n").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The file names generated here are the ones the package's asset list names.
    #[test]
    fn the_asset_list_names_the_generated_files() {
        let manifest =
            fs::read_to_string(crate::project_root().join("filter-user/Cargo.toml")).unwrap();
        for (_, file) in COMPLETIONS {
            assert!(
                manifest.contains(&format!("\"target/release/dist/completions/{file}\"")),
                "filter-user/Cargo.toml does not package {file}"
            );
        }
        assert!(manifest.contains("\"target/release/dist/man/*.1.gz\""));
    }
}
