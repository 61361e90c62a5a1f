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
        "nonce": "n1", "email": "Alice@Example.com", "groups": ["oncall", "other"],
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
