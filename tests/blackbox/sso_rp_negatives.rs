//! The relying party's refusals, modelled on the OpenID Foundation's RP
//! conformance tests, with ID tokens minted by a test IdP under the test's
//! control (`test_idp`).

use pacer_shared::auth::oidc::{OidcClient, OidcSettings};
use pacer_shared::config::Secret;
use serde_json::json;

use crate::test_idp::{KID_A, KeyName, Kid, Signer, TestIdp, TokenScript};

const NONCE: &str = "n-0123456789";

async fn rp(idp: &TestIdp) -> OidcClient {
    let settings = OidcSettings {
        issuer: idp.issuer.clone(),
        client_id: idp.client_id.clone(),
        client_secret: Secret::new(idp.client_secret.clone()),
        redirect_url: "http://127.0.0.1:9/api/auth/oidc/callback".into(),
        scopes: vec!["openid".into(), "email".into()],
        require_email_verified: true,
        allowed_emails: vec![],
        allowed_domains: vec![],
        groups_claim: None,
        allowed_groups: vec![],
        admin_groups: vec![],
    };
    OidcClient::discover(settings).await.expect("discovery")
}

async fn verdict(idp: &TestIdp, client: &OidcClient, script: TokenScript) -> Result<(), String> {
    idp.script(script);
    let token = idp.mint_id_token(Some(NONCE));
    client
        .validate_id_token(&token, NONCE)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_passes_and_every_forgery_is_refused() {
    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    let client = rp(&idp).await;
    assert_eq!(
        verdict(&idp, &client, TokenScript::new()).await,
        Ok(()),
        "RS256 with a published key"
    );
    assert_eq!(
        verdict(&idp, &client, TokenScript::new().signer(Signer::Ec)).await,
        Ok(()),
        "ES256 with a published key"
    );
    let several = TokenScript::new()
        .set("aud", json!(["pacer-rp", "another-app"]))
        .set("azp", json!("pacer-rp"));
    assert_eq!(
        verdict(&idp, &client, several).await,
        Ok(()),
        "several audiences, issued to pacer"
    );

    let refused = [
        (
            "invalid RS256 signature",
            TokenScript::new().corrupt_signature(),
        ),
        (
            "invalid ES256 signature",
            TokenScript::new().signer(Signer::Ec).corrupt_signature(),
        ),
        (
            "signed by a key the IdP does not publish",
            TokenScript::new()
                .signer(Signer::RsaB)
                .kid(Kid::Value(KID_A.into())),
        ),
        (
            "HS256 keyed with the IdP's public key",
            TokenScript::new().signer(Signer::Hs256WithPublicKey),
        ),
        (
            "HS256 keyed with the client secret",
            TokenScript::new().signer(Signer::Hs256(b"rp-secret".to_vec())),
        ),
        ("alg none", TokenScript::new().signer(Signer::AlgNone)),
        (
            "wrong iss",
            TokenScript::new().set("iss", json!("https://evil.example")),
        ),
        (
            "wrong aud",
            TokenScript::new().set("aud", json!("someone-else")),
        ),
        (
            "pacer among several audiences, no azp",
            TokenScript::new().set("aud", json!(["pacer-rp", "another-app"])),
        ),
        (
            "issued to another client",
            TokenScript::new()
                .set("aud", json!(["pacer-rp", "another-app"]))
                .set("azp", json!("another-app")),
        ),
        (
            "azp naming another client",
            TokenScript::new().set("azp", json!("another-app")),
        ),
        ("missing aud", TokenScript::new().remove("aud")),
        ("missing iat", TokenScript::new().remove("iat")),
        ("missing sub", TokenScript::new().remove("sub")),
        (
            "nonce mismatch",
            TokenScript::new().nonce("another-sign-in"),
        ),
        ("missing nonce", TokenScript::new().remove("nonce")),
        (
            "expired",
            TokenScript::new().set("exp", json!(chrono::Utc::now().timestamp() - 3600)),
        ),
    ];
    for (case, script) in refused {
        assert!(
            verdict(&idp, &client, script).await.is_err(),
            "{case} must be refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_kid_is_accepted_only_when_one_key_could_have_signed_it() {
    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    idp.publish_without_kids(&[KeyName::A]);
    let client = rp(&idp).await;
    assert_eq!(
        verdict(&idp, &client, TokenScript::new().no_kid()).await,
        Ok(()),
        "one RSA key: that one"
    );

    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    idp.publish_without_kids(&[KeyName::A, KeyName::B]);
    let client = rp(&idp).await;
    assert!(
        verdict(&idp, &client, TokenScript::new().no_kid())
            .await
            .is_err(),
        "several keys: ambiguous"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_signing_key_costs_exactly_one_jwks_refetch() {
    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    let client = rp(&idp).await;
    let after_discovery = idp.jwks_fetches();
    assert_eq!(verdict(&idp, &client, TokenScript::new()).await, Ok(()));
    assert_eq!(
        idp.jwks_fetches(),
        after_discovery,
        "a known kid needs no fetch"
    );

    // The IdP rotates to key B.
    idp.publish(&[KeyName::B]);
    assert_eq!(
        verdict(&idp, &client, TokenScript::new().signer(Signer::RsaB)).await,
        Ok(())
    );
    assert_eq!(
        idp.jwks_fetches(),
        after_discovery + 1,
        "exactly one refetch for the new kid"
    );
    assert_eq!(
        verdict(&idp, &client, TokenScript::new().signer(Signer::RsaB)).await,
        Ok(())
    );
    assert_eq!(idp.jwks_fetches(), after_discovery + 1, "and none after");

    // A kid nobody publishes, within a minute of that refetch: refused
    // without asking the IdP again.
    let unknown = TokenScript::new()
        .signer(Signer::RsaB)
        .kid(Kid::Value("nobody".into()));
    assert!(verdict(&idp, &client, unknown).await.is_err());
    assert_eq!(
        idp.jwks_fetches(),
        after_discovery + 1,
        "at most one refetch a minute"
    );
}

/// An unknown `kid` made pacer fetch the IdP's keys every time: tokens
/// naming made-up keys turned each sign-in attempt into a request to the IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kids_cost_at_most_one_jwks_fetch_a_minute_shared_by_concurrent_sign_ins() {
    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    let client = std::sync::Arc::new(rp(&idp).await);
    let after_discovery = idp.jwks_fetches();
    let made_up = |n: usize| {
        idp.script(TokenScript::new().kid(Kid::Value(format!("made-up-{n}"))));
        idp.mint_id_token(Some(NONCE))
    };
    let tokens: Vec<String> = (0..20).map(made_up).collect();
    let checks = tokens.into_iter().map(|token| {
        let client = client.clone();
        tokio::spawn(async move { client.validate_id_token(&token, NONCE).await.is_err() })
    });
    for refused in futures::future::join_all(checks).await {
        assert!(refused.unwrap());
    }
    assert_eq!(
        idp.jwks_fetches(),
        after_discovery + 1,
        "twenty sign-ins, one refetch"
    );

    // Once the minute is over (here: at once), the next unknown kid may look again.
    let client = rp(&idp)
        .await
        .with_jwks_refetch_every(std::time::Duration::ZERO);
    let before = idp.jwks_fetches();
    for n in 0..2 {
        assert!(
            client
                .validate_id_token(&made_up(100 + n), NONCE)
                .await
                .is_err()
        );
    }
    assert_eq!(idp.jwks_fetches(), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_fails_fast_when_the_idp_names_another_issuer() {
    let idp = TestIdp::start("pacer-rp", "rp-secret").await;
    idp.set_discovery_field("issuer", Some(json!("https://someone-else.example")));
    let settings = OidcSettings {
        issuer: idp.issuer.clone(),
        client_id: "pacer-rp".into(),
        client_secret: Secret::new("rp-secret"),
        redirect_url: "http://127.0.0.1:9/cb".into(),
        scopes: vec!["openid".into()],
        require_email_verified: true,
        allowed_emails: vec![],
        allowed_domains: vec![],
        groups_claim: None,
        allowed_groups: vec![],
        admin_groups: vec![],
    };
    let err = OidcClient::discover(settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.oidc.issuer"), "{err}");
}
