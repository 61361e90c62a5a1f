use super::*;
use crate::testing::oidc::{CLIENT_ID, FakeIdp};

fn oidc(issuer: &str) -> Oidc {
    Oidc {
        issuer: issuer.to_string(),
        client_id: CLIENT_ID.to_string(),
        client_secret_file: None,
        principal_claim: "email".into(),
        groups_claim: "groups".into(),
        groups: [("oncall".to_string(), "sre".to_string())].into(),
    }
}

fn keys(idp: &FakeIdp) -> Vec<Jwk> {
    serde_json::from_value(idp.jwks()["keys"].clone()).unwrap()
}

fn claims(idp: &FakeIdp, now: u64) -> serde_json::Value {
    serde_json::json!({
        "iss": idp.issuer(), "aud": CLIENT_ID, "exp": now + 300, "iat": now,
        "nonce": "n1", "email": "Alice@Example.com", "email_verified": true,
        "groups": ["oncall", "other"],
    })
}

#[tokio::test]
async fn a_good_id_token_names_the_principal_and_groups() {
    let idp = FakeIdp::start(serde_json::json!({})).await.unwrap();
    let now = 1_800_000_000;
    let t = idp.id_token(&claims(&idp, now));
    let id = verify_id_token(&t, &keys(&idp), &oidc(idp.issuer()), "n1", now).unwrap();
    assert_eq!(id.principal, "alice@example.com");
    assert_eq!(id.groups, vec!["oncall".to_string(), "other".to_string()]);
}

#[tokio::test]
async fn id_tokens_that_must_not_sign_anyone_in_are_refused() {
    let idp = FakeIdp::start(serde_json::json!({})).await.unwrap();
    let now = 1_800_000_000;
    let o = oidc(idp.issuer());
    let k = keys(&idp);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&idp, now);
        f(&mut c);
        idp.id_token(&c)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "other issuer",
            with(&|c| c["iss"] = "http://evil.example".into()),
            "iss",
        ),
        (
            "other audience",
            with(&|c| c["aud"] = "someone-else".into()),
            "aud",
        ),
        (
            "expired",
            with(&|c| c["exp"] = (now - 3600).into()),
            "expired",
        ),
        (
            "future",
            with(&|c| c["iat"] = (now + 3600).into()),
            "future",
        ),
        (
            "replayed nonce",
            with(&|c| c["nonce"] = "n0".into()),
            "nonce",
        ),
        (
            "unverified email",
            with(&|c| c["email_verified"] = false.into()),
            "verified",
        ),
        (
            "email not said to be verified",
            with(&|c| {
                c.as_object_mut().unwrap().remove("email_verified");
            }),
            "verified",
        ),
        (
            "no principal claim",
            with(&|c| {
                c.as_object_mut().unwrap().remove("email");
            }),
            "claim",
        ),
    ];
    for (what, t, says) in cases {
        let e = verify_id_token(&t, &k, &o, "n1", now)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{what}: {e}");
    }
    // A changed payload under the original signature.
    let good = idp.id_token(&claims(&idp, now));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(&idp, now);
    c["email"] = "mallory@example.com".into();
    let forged = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    let e = verify_id_token(&forged, &k, &o, "n1", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("signature does not verify"), "{e}");
    // alg none, and a key id nobody published.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","kid":"fake-1"}"#),
        parts[1]
    );
    assert!(verify_id_token(&none, &k, &o, "n1", now).is_err());
    let other_kid = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"ES256","kid":"gone"}"#),
        parts[1],
        parts[2]
    );
    let e = verify_id_token(&other_kid, &k, &o, "n1", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no published key"), "{e}");
    // Another provider's key.
    let other = FakeIdp::start(serde_json::json!({})).await.unwrap();
    let e = verify_id_token(&good, &keys(&other), &o, "n1", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("signature does not verify"), "{e}");
}

/// Most providers sign with RS256: a 2048-bit test key (made once with `openssl genpkey`,
/// used for nothing else) signs, the verifier checks with the JWK's n and e.
#[test]
fn an_rs256_id_token_verifies_with_the_published_modulus_and_exponent() {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents};
    let key = RsaKeyPair::from_pkcs8(include_bytes!("rsa-test-key.pk8")).unwrap();
    let pubc: RsaPublicKeyComponents<Vec<u8>> = key.public().into();
    let jwk: Jwk = serde_json::from_value(serde_json::json!({
        "kty": "RSA", "kid": "rsa-1", "n": B64.encode(&pubc.n), "e": B64.encode(&pubc.e),
    }))
    .unwrap();
    let now = 1_800_000_000u64;
    let o = oidc("https://idp.example.com");
    let sign = |header: &str, claims: &serde_json::Value| {
        let input = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", B64.encode(sig))
    };
    let claims = serde_json::json!({
        "iss": "https://idp.example.com", "aud": [CLIENT_ID, "other"], "azp": CLIENT_ID,
        "exp": now + 60, "nonce": "n1", "email": "bob@example.com", "email_verified": true,
    });
    let t = sign(r#"{"alg":"RS256","kid":"rsa-1"}"#, &claims);
    let id = verify_id_token(&t, std::slice::from_ref(&jwk), &o, "n1", now).unwrap();
    assert_eq!(id.principal, "bob@example.com");
    assert!(id.groups.is_empty());
    // The same signature presented as another algorithm (alg confusion) does not verify.
    let parts: Vec<&str> = t.split('.').collect();
    let as_es = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"ES256","kid":"rsa-1"}"#),
        parts[1],
        parts[2]
    );
    assert!(verify_id_token(&as_es, std::slice::from_ref(&jwk), &o, "n1", now).is_err());
    let hs = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"HS256","kid":"rsa-1"}"#),
        parts[1],
        parts[2]
    );
    let e = verify_id_token(&hs, &[jwk], &o, "n1", now)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not accepted"), "{e}");
}
