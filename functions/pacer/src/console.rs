//! The web console inside the binary. Release builds carry `web/dist` in the
//! executable, so one file is the whole local product; debug builds read the
//! folder on each request, so a rebuilt console shows without recompiling.

use pacer_shared::http::console::{ConsoleFile, ConsoleFiles};

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../../web/dist"]
#[allow_missing = true]
struct Dist;

pub struct Embedded;

impl ConsoleFiles for Embedded {
    fn file(&self, path: &str) -> Option<ConsoleFile> {
        let file = Dist::get(path)?;
        Some(ConsoleFile {
            content_type: file.metadata.mimetype().to_string(),
            bytes: file.data,
        })
    }
}
