//! Capability token sign and verify (PASETO v4.public), each next to its baseline: a bare
//! Ed25519 signature over the same JSON claims bytes. The ratio is the cost of the PASETO
//! framing (PAE, base64) and claim (de)serialisation on top of the signature itself.
//!
//! `cargo bench --bench tokens`

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, Verifier};
use firma::authority::token::{CapabilityClaims, key_id, sign_token, verify_token};

fn claims(key: &ed25519_dalek::SigningKey) -> CapabilityClaims {
    let now = Utc::now();
    CapabilityClaims {
        token_id: uuid::Uuid::now_v7().to_string(),
        issuer: key_id(&key.verifying_key()),
        audience: "bench".into(),
        agent_id: "codex".into(),
        session_id: uuid::Uuid::now_v7().to_string(),
        actions: vec![
            "communication.external.send".into(),
            "communication.internal.send".into(),
        ],
        resource_scope: "api.anthropic.com".into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(15),
        sandbox_id: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public = key.verifying_key();
    let claims = claims(&key);
    let token = sign_token(&key, &claims).unwrap();
    // The same bytes the token carries as its payload.
    let payload = serde_json::json!({
        "jti": claims.token_id, "iss": claims.issuer, "aud": claims.audience,
        "sub": claims.agent_id, "sid": claims.session_id,
        "actions": claims.actions, "scope": claims.resource_scope,
        "iat": claims.issued_at.to_rfc3339(), "exp": claims.expires_at.to_rfc3339(),
    })
    .to_string()
    .into_bytes();
    let signature = key.sign(&payload);
    let now = Utc::now();

    let mut group = c.benchmark_group("sign");
    group.bench_function("baseline_ed25519_sign", |b| b.iter(|| key.sign(&payload)));
    group.bench_function("paseto_sign_token", |b| {
        b.iter(|| sign_token(&key, &claims).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    group.bench_function("baseline_ed25519_verify", |b| {
        b.iter(|| public.verify(&payload, &signature).unwrap())
    });
    group.bench_function("paseto_verify_token", |b| {
        b.iter(|| verify_token(&token, &public, now).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
