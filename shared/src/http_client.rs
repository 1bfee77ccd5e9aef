//! The HTTP clients pacer builds (GitHub's API, the OpenID Provider, the
//! simulated runners' callbacks) and the TLS stack under them and under the
//! AWS SDK: rustls on aws-lc-rs, one for the whole process.

/// Makes aws-lc-rs the process-wide rustls provider, for the clients that
/// look it up at run time (reqwest, the AWS SDK, the ACME client). `host::boot`
/// calls it before anything is built, and [`builder`] before every client, so
/// an adapter built on its own (as tests do) works too. Later calls, and a
/// provider someone else installed first, are harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is all we need.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A reqwest client builder on pacer's TLS stack: how every HTTP client in
/// pacer starts.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}
