//! Error text for logs and one-line messages.

/// An error and its causes, by their `Display` only, joined with `: `. The
/// AWS SDK's `Debug` forms (and so its `DisplayErrorContext`) carry the raw
/// HTTP response, which is noise in a message a person reads.
pub fn display_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Wrappers often repeat their inner error word for word.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::display_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the pool")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        assert_eq!(display_chain(&Outer(io)), "reading the pool: disk on fire");
        let wrapped =
            anyhow::Error::new(std::io::Error::other("timed out")).context("asking GitHub");
        assert_eq!(display_chain(&*wrapped), "asking GitHub: timed out");
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path);
            }
        }
    }

    /// An error logged by its top message alone ("dispatch failed: the
    /// store failed") leaves an operator guessing; every `error =` field of a
    /// log line carries the whole chain of causes.
    #[test]
    fn every_logged_error_carries_its_causes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        rust_files(&root.join("../functions"), &mut files);
        let mut bare = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (number, line) in text.lines().enumerate() {
                for (at, _) in line.match_indices("error = ") {
                    let value = &line[at + "error = ".len()..];
                    let chained = [
                        "%crate::error_text::display_chain(",
                        "%pacer_shared::error_text::display_chain(",
                        "%format!(\"{e:#}\")",
                    ]
                    .iter()
                    .any(|form| value.starts_with(form));
                    if !chained && (value.starts_with('%') || value.starts_with('?')) {
                        bare.push(format!(
                            "{}:{}: {}",
                            file.display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
        assert!(files.len() > 50, "the sources were read");
        assert_eq!(bare, Vec::<String>::new(), "log these with display_chain");
    }
}
