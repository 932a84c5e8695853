//! The `hookwall` command line.
fn main() -> anyhow::Result<()> {
    Ok(())
}
