//! Audit log throughput: appending signed, chained records (against a plain unsigned append and
//! the writer with `fsync = always`), and verifying a log (single-threaded one-by-one signature
//! checks as the baseline, against batch verification and both cores).
//!
//! `cargo bench --bench audit` — figures in docs/performance.md ("Audit log").

use std::io::Write;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use firma::audit::event::{AuditDraft, Decision, Intent, PolicyRef};
use firma::audit::verify::{VerifyOptions, verify};
use firma::audit::writer::{AuditWriter, WriterOptions};
use firma::config::schema::FsyncPolicy;

const VERIFY_LINES: u64 = 10_000;

fn draft(i: u64) -> AuditDraft {
    AuditDraft {
        decision: Decision::Allow,
        reason: "permitted by policy0".into(),
        agent_id: "codex".into(),
        session_id: "0193a1c2-7d4e-7b5f-9a31-2f0c6a1d9e77".into(),
        token_id: "tok-0193a1c2".into(),
        sandbox_id: String::new(),
        intent: Intent {
            action_class: "communication.external.send".into(),
            method: "POST".into(),
            host: "api.slack.com".into(),
            path: format!("/api/chat.postMessage/{i}"),
            ..Default::default()
        },
        policy: PolicyRef {
            bundle: "bundle-7".into(),
            determining: vec!["policy0".into()],
        },
        latency_us: 180,
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_append");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let key = firma::config::keys::generate();

    // Baseline: serialise an unsigned record and write(2) it, no chain, no signature.
    {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("plain.jsonl"))
            .unwrap();
        let mut i = 0;
        group.bench_function("plain_unsigned_write", |b| {
            b.iter(|| {
                i += 1;
                let mut line = serde_json::to_vec(&draft(i)).unwrap();
                line.push(b'\n');
                file.write_all(&line).unwrap();
            })
        });
    }
    for (name, fsync) in [
        ("writer_fsync_always", FsyncPolicy::Always),
        ("writer_fsync_batched", FsyncPolicy::Batched),
    ] {
        let log = dir.path().join(format!("{name}.jsonl"));
        let options = WriterOptions {
            fsync,
            ..WriterOptions::default()
        };
        let (writer, _) = AuditWriter::open(&log, key.clone(), options).unwrap();
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                writer.append(draft(i)).unwrap()
            })
        });
        writer.shutdown().unwrap();
    }
    // Two threads sharing the writer (the Sidecar's shape): 2 × 500 appends per iteration.
    {
        let log = dir.path().join("shared.jsonl");
        let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
        group.throughput(Throughput::Elements(1000));
        group.bench_function("writer_fsync_batched_2_threads_x500", |b| {
            b.iter(|| {
                std::thread::scope(|scope| {
                    for t in 0..2 {
                        let writer = writer.clone();
                        scope.spawn(move || {
                            for i in 0..500 {
                                writer.append(draft(t * 1000 + i)).unwrap();
                            }
                        });
                    }
                })
            })
        });
        writer.shutdown().unwrap();
    }
    group.finish();
}

fn verification(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = firma::config::keys::generate();
    let log = dir.path().join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    for i in 0..VERIFY_LINES {
        writer.append(draft(i)).unwrap();
    }
    writer.shutdown().unwrap();

    let mut group = c.benchmark_group("audit_verify");
    group
        .throughput(Throughput::Elements(VERIFY_LINES))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (name, threads, batch) in [
        ("1_thread_single_signatures", 1, false),
        ("1_thread_batch_signatures", 1, true),
        ("all_cores_batch_signatures", 0, true),
    ] {
        let mut options = VerifyOptions::new(vec![log.clone()], key.verifying_key());
        options.threads = threads;
        options.batch = batch;
        group.bench_function(name, |b| {
            b.iter_batched(
                || options.clone(),
                |options| {
                    let report = verify(&options).unwrap();
                    assert!(report.ok);
                    report
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // Where a line's time goes: parsing + canonical check alone, and signatures alone.
    let lines: Vec<Vec<u8>> = std::fs::read(&log)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let parsed: Vec<_> = lines
        .iter()
        .map(|l| firma::audit::record::parse_line(l).unwrap())
        .collect();
    let mut group = c.benchmark_group("audit_verify_parts");
    group
        .throughput(Throughput::Elements(VERIFY_LINES))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("parse_and_canonical_check", |b| {
        b.iter(|| {
            for line in &lines {
                firma::audit::record::parse_line(line).unwrap();
            }
        })
    });
    for batch in [64, 512, 2048] {
        group.bench_function(format!("signatures_only_batches_of_{batch}"), |b| {
            let vk = key.verifying_key();
            b.iter(|| {
                for chunk in parsed.chunks(batch) {
                    let messages: Vec<&[u8]> = chunk.iter().map(|p| p.message.as_slice()).collect();
                    let signatures: Vec<_> = chunk.iter().map(|p| p.signature).collect();
                    let keys = vec![vk; chunk.len()];
                    ed25519_dalek::verify_batch(&messages, &signatures, &keys).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append, verification);
criterion_main!(benches);
