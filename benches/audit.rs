//! Audit log throughput: appending signed, chained records (against a plain unsigned append and
//! the writer with `fsync = always`), and verifying a log (single-threaded one-by-one signature
//! checks as the baseline, against batch verification and both cores). And what rotation costs a
//! decision: append latency percentiles with rotations against the same writer without, same run.
//!
//! `cargo bench --bench audit` — figures in docs/performance.md ("Audit log");
//! `cargo bench --bench audit -- audit_rotation` runs only the rotation latency comparison.

#[path = "../tests/common/audit.rs"]
mod fixtures;

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use firma::audit::event::{AuditDraft, Decision};
use firma::audit::verify::{VerifyOptions, verify};
use firma::audit::writer::{AuditWriter, WriterOptions};
use firma::config::schema::FsyncPolicy;
use fixtures::Vary;

const VERIFY_LINES: u64 = 10_000;

/// A realistic decision (a Slack post): the record the figures in docs/performance.md were
/// measured with.
fn draft(i: u64) -> AuditDraft {
    fixtures::draft(i)
        .decision(Decision::Allow)
        .reason("permitted by policy0")
        .session("0193a1c2-7d4e-7b5f-9a31-2f0c6a1d9e77")
        .token("tok-0193a1c2")
        .host("api.slack.com")
        .path(format!("/api/chat.postMessage/{i}"))
        .policy("bundle-7", &["policy0"])
        .latency_us(180)
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
    // The same records as ten rotated files (what rotation leaves): verify reads them in turn.
    let rotated = firma::state_dir::AuditFiles::in_dir(dir.path().join("rotated"));
    std::fs::create_dir(rotated.dir()).unwrap();
    {
        let text = std::fs::read(&log).unwrap();
        let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        let per_file = lines.len().div_ceil(10);
        for (i, chunk) in lines.chunks(per_file).enumerate() {
            let n = 10 - i as u64;
            let path = if n == 1 {
                rotated.live().to_path_buf()
            } else {
                rotated.rotated(n - 1)
            };
            std::fs::write(path, chunk.concat()).unwrap();
        }
        std::fs::copy(log.with_extension("checkpoint"), rotated.checkpoint()).unwrap();
    }
    for (name, files, threads, batch) in [
        ("1_thread_single_signatures", vec![log.clone()], 1, false),
        ("1_thread_batch_signatures", vec![log.clone()], 1, true),
        ("all_cores_batch_signatures", vec![log.clone()], 0, true),
        (
            "all_cores_batch_signatures_10_rotated_files",
            rotated.oldest_first(),
            0,
            true,
        ),
    ] {
        let mut options = VerifyOptions::new(files, key.verifying_key());
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

/// Appends per round of the rotation comparison.
const ROTATION_APPENDS: u64 = 200_000;
/// Rotate every 1 MiB (~2,500 records): some 80 rotations per round, far more than a Sidecar
/// sees in a minute, so the percentiles below are a worst case.
const ROTATION_SIZE: u64 = 1 << 20;

/// Append latency (one appender thread, the Sidecar's shape, default `batched` fsync), with the
/// writer rotating by size against the same writer without rotation; rounds alternate.
fn rotation_latency() {
    let dir = tempfile::tempdir().unwrap();
    let key = firma::config::keys::generate();
    let mut table: Vec<(&str, Vec<Duration>, usize)> = Vec::new();
    for round in 0..3 {
        for (name, rotate_size) in [("no rotation", None), ("rotating", Some(ROTATION_SIZE))] {
            let sub = dir
                .path()
                .join(format!("{round}-{}", rotate_size.is_some()));
            std::fs::create_dir(&sub).unwrap();
            let options = WriterOptions {
                rotate_size,
                ..WriterOptions::default()
            };
            let (writer, _) =
                AuditWriter::open(&sub.join("audit.jsonl"), key.clone(), options).unwrap();
            let mut latencies = Vec::with_capacity(ROTATION_APPENDS as usize);
            for i in 0..ROTATION_APPENDS {
                let started = Instant::now();
                writer.append(draft(i)).unwrap();
                latencies.push(started.elapsed());
            }
            writer.shutdown().unwrap();
            let rotations = writer.files().rotations().len();
            latencies.sort();
            table.push((name, latencies, rotations));
        }
    }
    let pct = |l: &[Duration], p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("audit_rotation: append latency, {ROTATION_APPENDS} appends per round");
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "round", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "rotations"
    );
    for (name, latencies, rotations) in &table {
        println!(
            "{name:<12} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {rotations:>10}",
            us(pct(latencies, 0.50)),
            us(pct(latencies, 0.99)),
            us(pct(latencies, 0.999)),
            us(*latencies.last().unwrap()),
        );
    }
    let median_p99 = |rotating: bool| {
        let mut p99: Vec<f64> = table
            .iter()
            .filter(|(_, _, r)| (*r > 0) == rotating)
            .map(|(_, l, _)| us(pct(l, 0.99)))
            .collect();
        p99.sort_by(f64::total_cmp);
        p99[p99.len() / 2]
    };
    let (with, without) = (median_p99(true), median_p99(false));
    println!(
        "median p99: rotating {with:.1} µs vs no rotation {without:.1} µs: +{:.3} ms ({:.2}x; target ≤ +5 ms)",
        (with - without) / 1000.0,
        with / without
    );
}

criterion_group!(benches, append, verification);

fn main() {
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let rotation_only = filter.as_deref().is_some_and(|f| f.contains("rotation"));
    if filter.is_none() || rotation_only {
        rotation_latency();
    }
    if !rotation_only {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
