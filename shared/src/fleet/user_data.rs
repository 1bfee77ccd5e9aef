//! The runner's user data: `infra/runner/bootstrap.sh` behind a header that
//! sets the two shell variables it needs, `PACER_URL` and `PACER_TOKEN`.
//!
//! This module owns that format both ways: [`render`] writes it for a
//! launch, [`parse`] reads it back (the simulated fleet plays the script's
//! part from it; tests read it off an instance). The JIT runner config is
//! never in here: the script trades the token for it.

use std::fmt;

use base64::Engine as _;

use crate::config::Secret;

/// The bootstrap script, compiled in so every host renders the same one.
pub const BOOTSTRAP_SCRIPT: &str = include_str!("../../../infra/runner/bootstrap.sh");

/// EC2's limit on user data before base64.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

const HEADER_START: &str = "# --- pacer: this runner's callback settings ---";
const HEADER_END: &str = "# --- end of pacer's settings ---";

/// What the header carries.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// pacer's base URL for `/api/runner/*`, without a trailing slash.
    pub url: String,
    /// The runner's callback token: a credential.
    pub token: Secret,
}

impl fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("url", &self.url)
            .field("token", &self.token)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("the user data has no pacer settings header")]
    NoHeader,
    #[error("the user data does not set {0}")]
    Missing(&'static str),
    #[error("{0} is not a well-formed shell single-quoted value")]
    Malformed(&'static str),
    #[error("the user data is not base64 text: {0}")]
    NotBase64(String),
}

/// The user data for one runner: the script's shebang, the settings header,
/// then the rest of the script. Holds the token: never log it.
pub fn render(pacer_url: &str, token: &Secret) -> String {
    let (shebang, body) = BOOTSTRAP_SCRIPT
        .split_once('\n')
        .unwrap_or(("#!/bin/bash", BOOTSTRAP_SCRIPT));
    format!(
        "{shebang}\n{HEADER_START}\nPACER_URL={}\nPACER_TOKEN={}\n{HEADER_END}\n{body}",
        shell_quote(pacer_url.trim_end_matches('/')),
        shell_quote(token.expose()),
    )
}

/// Reads the settings back from rendered user data.
pub fn parse(user_data: &str) -> Result<CallbackSettings, UserDataError> {
    let (_, after_start) = user_data
        .split_once(HEADER_START)
        .ok_or(UserDataError::NoHeader)?;
    let (header, _) = after_start
        .split_once(HEADER_END)
        .ok_or(UserDataError::NoHeader)?;
    let (url, after_url) = assignment(header, "PACER_URL")?;
    // The token's line is the one after the URL's: looked for from there, a
    // URL holding the text `\nPACER_TOKEN=` inside its quotes is not read as it.
    let (token, _) = assignment(after_url, "PACER_TOKEN")?;
    Ok(CallbackSettings {
        url,
        token: Secret::new(token),
    })
}

/// User data as RunInstances wants it.
pub fn to_base64(user_data: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user_data)
}

/// User data as DescribeInstanceAttribute returns it.
pub fn from_base64(encoded: &str) -> Result<String, UserDataError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| UserDataError::NotBase64(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| UserDataError::NotBase64(e.to_string()))
}

/// `'…'` with each `'` written as `'\''`: the one shell quoting in which no
/// character is special, so any URL or token survives unchanged.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The value of `NAME=<quoted word>` at the start of a header line, and the
/// text after it (from the newline that ends it).
fn assignment<'a>(header: &'a str, name: &'static str) -> Result<(String, &'a str), UserDataError> {
    let prefix = format!("\n{name}=");
    let (_, value) = header
        .split_once(&prefix)
        .ok_or(UserDataError::Missing(name))?;
    unquote(value).ok_or(UserDataError::Malformed(name))
}

/// Reads one word made of `'…'` runs and `\'` escapes (what [`shell_quote`]
/// writes), up to the first unquoted newline, which it leaves in the rest.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.chars();
    loop {
        let rest = chars.as_str();
        match chars.next() {
            None | Some('\n') => return Some((out, rest)),
            Some('\'') => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            Some('\\') => out.push(chars.next().filter(|c| *c == '\'')?),
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Secret {
        Secret::new(s)
    }

    #[test]
    fn rendered_settings_parse_back_unchanged() {
        let ud = render("https://pacer.example.com/", &token("tok.abc-123_XYZ="));
        let settings = parse(&ud).unwrap();
        assert_eq!(
            settings.url, "https://pacer.example.com",
            "the trailing slash is dropped"
        );
        assert_eq!(settings.token.expose(), "tok.abc-123_XYZ=");
    }

    #[test]
    fn quotes_and_shell_syntax_in_a_value_survive() {
        let nasty = "a'b\"c$(reboot)`x` \\ ; 'end'";
        let settings = parse(&render("http://127.0.0.1:3000", &token(nasty))).unwrap();
        assert_eq!(settings.token.expose(), nasty);
    }

    #[test]
    fn the_script_keeps_its_shebang_first_and_follows_the_header() {
        let ud = render("http://127.0.0.1:3000", &token("t"));
        assert!(ud.starts_with("#!/bin/bash\n# --- pacer"), "{}", &ud[..60]);
        assert!(ud.ends_with(BOOTSTRAP_SCRIPT.split_once('\n').unwrap().1));
    }

    #[test]
    fn the_rendered_user_data_fits_ec2s_limit() {
        let ud = render(
            &format!("https://{}.example.com", "x".repeat(200)),
            &token(&"t".repeat(1024)),
        );
        assert!(ud.len() < MAX_USER_DATA_BYTES, "{} bytes", ud.len());
    }

    #[test]
    fn user_data_without_the_header_is_refused() {
        assert_eq!(
            parse("#!/bin/bash\necho hi\n"),
            Err(UserDataError::NoHeader)
        );
        let no_token = format!("{HEADER_START}\nPACER_URL='x'\n{HEADER_END}\n");
        assert_eq!(parse(&no_token), Err(UserDataError::Missing("PACER_TOKEN")));
        let unquoted = format!("{HEADER_START}\nPACER_URL=x\nPACER_TOKEN='t'\n{HEADER_END}\n");
        assert_eq!(parse(&unquoted), Err(UserDataError::Malformed("PACER_URL")));
    }

    #[test]
    fn a_url_holding_the_token_line_still_reads_back() {
        // Found by any_url_and_token_survive_rendering: the token was looked
        // for from the top of the header, and found inside the URL's quotes.
        let settings = parse(&render("\nPACER_TOKEN=", &token("t"))).unwrap();
        assert_eq!(
            (settings.url.as_str(), settings.token.expose()),
            ("\nPACER_TOKEN=", "t")
        );
    }

    #[test]
    fn base64_round_trips() {
        let ud = render("http://127.0.0.1:1", &token("t"));
        assert_eq!(from_base64(&to_base64(&ud)).unwrap(), ud);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let settings = parse(&render("http://x", &token("s3cret"))).unwrap();
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    use proptest::strategy::Strategy as _;

    /// Text made of the format's own delimiters (quotes, escapes, line
    /// breaks, the variable names, the header lines) and plain characters.
    fn awkward_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let pieces = vec![
            "'",
            "\\",
            "\n",
            "'\\''",
            "PACER_URL=",
            "PACER_TOKEN=",
            HEADER_START,
            HEADER_END,
            "/",
            "x",
            "€",
        ];
        prop_oneof![
            crate::arbitrary::hostile_text(),
            proptest::collection::vec(proptest::sample::select(pieces), 0..10)
                .prop_map(|p| p.concat()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_url_and_token_survive_rendering(url in awkward_value(), secret in awkward_value()) {
            let settings = parse(&render(&url, &token(&secret)));
            proptest::prop_assert_eq!(
                settings.map(|s| (s.url, s.token.expose().to_string())),
                Ok((url.trim_end_matches('/').to_string(), secret))
            );
        }

        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in proptest::prop_oneof![
            crate::arbitrary::hostile_text(),
            awkward_value().prop_map(|v| format!("{HEADER_START}\nPACER_URL={v}\nPACER_TOKEN={v}\n{HEADER_END}")),
        ]) {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
            let _ = from_base64(&text);
        }
    }
}
