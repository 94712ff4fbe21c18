//! Installing Debian packages the build or the tests need, when we may.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// Makes sure each `(package, file it installs)` is present. Missing ones
/// are installed with apt-get when running as root on Debian (said once,
/// with the list); elsewhere this stops with the command to run.
/// `purpose` says what needs them; `alternative` how else to get there.
pub fn ensure(packages: &[(&str, &str)], purpose: &str, alternative: &str) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, proof)| !Path::new(proof).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", missing.join(" "));
    let can_install = Path::new("/etc/debian_version").exists() && is_root();
    if !can_install {
        bail!(
            "{purpose} needs Debian's packages {}; install them with `sudo {install}` {alternative}",
            missing.join(", ")
        );
    }
    eprintln!("xtask: {purpose}: installing {}", missing.join(" "));
    let updated = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !updated.success() {
        bail!("apt-get update failed");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        bail!("`{install}` failed");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
