//! Stamps the build with `git describe`, for `pacer version` and
//! `/api/version`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let describe = git(&["describe", "--tags", "--always"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PACER_GIT_DESCRIBE={describe}");
    // Re-stamp when the checked-out commit moves. Only paths that exist are
    // watched: cargo counts a missing one as changed on every build, which
    // would recompile this crate (and all that depends on it) each time.
    // `.git` may be a file (a worktree), so git says where its parts are.
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        for part in ["refs/heads", "refs/tags", "packed-refs"] {
            watched.push(common.join(part));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    if watched.is_empty() {
        // Not a checkout: nothing to watch but this script.
        println!("cargo:rerun-if-changed=build.rs");
    }
}
