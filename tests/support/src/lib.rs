//! What pacer's black-box tests (`tests/blackbox`) and `make bench`
//! (`tests/bench`) share: a private `moto_server` ([`moto`]), the Lambda
//! Runtime API stub the built functions run under ([`lambda_runtime`]), the
//! events AWS hands the functions ([`events`]), a proxy in front of moto
//! that injects EC2's faults and records its calls ([`fault_proxy`]), a
//! test's own loopback HTTP server ([`loopback`]), and property-test
//! strategies for hostile input ([`arbitrary`]). Test code: it panics
//! with a plain message where something it needs is missing.

pub mod arbitrary;
pub mod events;
pub mod fault_proxy;
pub mod lambda_runtime;
pub mod loopback;
pub mod moto;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// `relative` (a path from the repository's root, `/`-separated) in this
/// checkout, for tests that read the repository's own files.
pub fn in_repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two folders below the root")
        .join(relative)
}

/// A port nothing listens on right now: bound, read, released.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
    listener.local_addr().expect("local address").port()
}

/// The cargo target directory the running executable was built into (the
/// nearest ancestor holding cargo's `CACHEDIR.TAG`), wherever
/// `CARGO_TARGET_DIR` put it.
pub fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// A scratch directory under the target directory (`<target>/tmp/<name>`,
/// cargo's `CARGO_TARGET_TMPDIR`), or under the system's temporary
/// directory when the executable is not in one.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = target_dir().map_or_else(std::env::temp_dir, |t| t.join("tmp"));
    let dir = base.join(name);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Where a binary of this workspace built with the running executable's
/// profile lies: beside it, or one level up from a test binary in `deps/`
/// or an example in `examples/`.
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    dir.join(name)
}
