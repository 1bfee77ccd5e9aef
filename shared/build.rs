//! Stamps the build with `git describe`, for `pacer version` and
//! `/api/version`.

use std::process::Command;

fn main() {
    let describe = Command::new("git")
        .args(["describe", "--tags", "--always"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PACER_GIT_DESCRIBE={describe}");
    // Re-stamp when the checked-out commit moves.
    for path in [
        "../.git/HEAD",
        "../.git/refs/heads",
        "../.git/refs/tags",
        "../.git/packed-refs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
