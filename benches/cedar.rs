//! Cedar evaluation cost per call, as the Sidecar does it (request built with the schema,
//! context of six attributes, determining policy ids collected). Target: p50 ≤ 20 µs.
//! Run: `cargo bench --bench cedar` (the median is criterion's `median` estimate).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use firma::config::action_classes::cedar_schema;
use firma::sidecar::cedar::{CedarCall, PolicyBundle};

/// A realistic bundle: the scaffold's permits plus forbids that look at the context.
const POLICIES: &str = r#"
@id("allow-provider-api")
permit (principal == Firma::Agent::"codex", action == Firma::Action::"communication.external.send", resource)
when { context has host && (context.host == "api.anthropic.com" || context.host like "*.anthropic.com") };

@id("allow-loopback")
permit (principal == Firma::Agent::"codex", action == Firma::Action::"communication.internal.send", resource);

@id("no-metadata-service")
forbid (principal, action, resource) when { context has host && context.host == "169.254.169.254" };

@id("no-admin-paths")
forbid (principal, action, resource) when { context has path && context.path like "/admin*" };

@id("office-hours-payments")
forbid (principal, action == Firma::Action::"payment.transfer", resource) when { context.time < 0 };
"#;

fn bench(c: &mut Criterion) {
    let (bundle, warnings) =
        PolicyBundle::parse("bench", POLICIES, &cedar_schema(), Duration::from_secs(30))
            .expect("bundle parses");
    assert!(warnings.is_empty(), "{warnings:?}");
    let allow = CedarCall {
        agent_id: "codex",
        action_class: "communication.external.send",
        session_id: "sess-1",
        time: 1_800_000_000,
        method: "POST",
        host: "api.anthropic.com",
        port: 443,
        path: "/v1/messages",
    };
    let deny = CedarCall {
        path: "/admin/users",
        ..allow
    };
    assert!(bundle.evaluate(&allow).unwrap().allowed);
    assert!(!bundle.evaluate(&deny).unwrap().allowed);
    let mut group = c.benchmark_group("cedar");
    group.bench_function("evaluate_allow", |b| {
        b.iter(|| bundle.evaluate(std::hint::black_box(&allow)))
    });
    group.bench_function("evaluate_forbid", |b| {
        b.iter(|| bundle.evaluate(std::hint::black_box(&deny)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
