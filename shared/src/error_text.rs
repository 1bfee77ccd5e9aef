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
