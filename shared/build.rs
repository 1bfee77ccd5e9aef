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
    // Re-stamp when the checked-out commit moves: HEAD, the branch it names,
    // packed refs and tags. Only paths that exist are watched: cargo counts
    // a missing one as changed on every build, which would recompile this
    // crate (and all that depends on it) each time. Other branches are not
    // watched, so creating one rebuilds nothing. `.git` may be a file (a
    // worktree), so git says where its parts are.
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(branch));
        }
        watched.push(common.join("packed-refs"));
        watched.push(common.join("refs/tags"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // Always watch something, or cargo reruns this script on any change in
    // the package.
    println!("cargo:rerun-if-changed=build.rs");
}
