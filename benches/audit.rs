//! Audit log throughput: appending signed, chained records (against a plain unsigned append and
//! the writer with `fsync = always`), and verifying a log (single-threaded one-by-one signature
//! checks as the baseline, against batch verification and both cores). And what rotation costs a
//! decision: append latency percentiles with rotations against the same writer without, same run.
//!
//! `cargo bench --bench audit` — figures in docs/performance.md ("Audit log");
//! `cargo bench --bench audit -- audit_rotation` runs only the rotation latency comparison;
//! `cargo bench --bench audit -- audit_verify_1m` only `firma audit verify` on 1M records.

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

/// Records in the logs `firma audit verify` is timed on.
const MILLION: u64 = 1_000_000;

/// `firma audit verify` (the release binary, both cores) on a 1M-record format-2 log, against
/// two baselines in the same run: `sha256sum` of the same file (reading and hashing it, no JSON
/// and no signature) and the same verifier on a 1M-record format-1 log; and the peak RSS on a
/// 100k-record log against the 1M one (flat in file size). Best of three runs each.
fn verify_million() {
    let dir = tempfile::tempdir().unwrap();
    let key = firma::config::keys::generate();
    let secret = dir.path().join("audit.key");
    firma::config::keys::write_pair(&secret, &key).unwrap();
    let public = firma::config::keys::public_path(&secret);
    let make = |name: &str, records: u64| {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let log = sub.join("audit.jsonl");
        let options = WriterOptions {
            fsync: FsyncPolicy::Never,
            rotate_size: None,
            ..WriterOptions::default()
        };
        let (writer, _) = AuditWriter::open(&log, key.clone(), options).unwrap();
        // Two appenders, as the Sidecar's two request threads: format 2 signs in parallel.
        std::thread::scope(|scope| {
            for t in 0..2 {
                let writer = writer.clone();
                scope.spawn(move || {
                    for i in (t..records).step_by(2) {
                        writer.append(draft(i)).unwrap();
                    }
                });
            }
        });
        writer.shutdown().unwrap();
        log
    };
    let started = Instant::now();
    let v2 = make("v2", MILLION);
    let small = make("v2-small", MILLION / 10);
    let v1 = dir.path().join("v1.jsonl");
    firma::audit::format1::write_log(&v1, &key, (0..MILLION).map(draft)).unwrap();
    eprintln!("audit_verify_1m: logs written in {:.0?}", started.elapsed());

    let firma = env!("CARGO_BIN_EXE_firma");
    let verify_on = |log: &std::path::Path, threads: Option<&str>| {
        let mut cmd = std::process::Command::new(firma);
        cmd.args(["audit", "verify", "--file"])
            .arg(log)
            .arg("--key")
            .arg(&public);
        if let Some(threads) = threads {
            cmd.args(["--threads", threads]);
        }
        cmd
    };
    // The default: one worker per core.
    let verify = |log: &std::path::Path| verify_on(log, None);
    let sha = |log: &std::path::Path| {
        let mut cmd = std::process::Command::new("sha256sum");
        cmd.arg(log);
        cmd
    };
    let (sha_s, _) = best_of_three(|| sha(&v2));
    let (v2_s, v2_rss) = best_of_three(|| verify(&v2));
    let (v1_s, _) = best_of_three(|| verify(&v1));
    let (one_s, _) = best_of_three(|| verify_on(&v2, Some("1")));
    let (_, small_rss) = best_of_three(|| verify(&small));
    let size = std::fs::metadata(&v2).unwrap().len();
    let rate = |secs: f64| MILLION as f64 / secs;
    println!(
        "audit_verify_1m: {MILLION} records, {:.0} MB, cores: {}",
        size as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  baseline sha256sum of the file: {sha_s:.2} s ({:.0} lines/s)",
        rate(sha_s)
    );
    println!(
        "  baseline firma audit verify, format-1 log: {v1_s:.2} s ({:.0} lines/s)",
        rate(v1_s)
    );
    println!(
        "  firma audit verify, format-2 log: {v2_s:.2} s = {:.0} lines/s (target >= 100000): {}; {:.2}x the format-1 rate, {:.1}x sha256sum's time",
        rate(v2_s),
        if rate(v2_s) >= 100_000.0 {
            "met"
        } else {
            "NOT met"
        },
        v1_s / v2_s,
        v2_s / sha_s
    );
    println!(
        "  the same with --threads 1 (no worker threads): {one_s:.2} s = {:.0} lines/s; all cores {:.2}x faster",
        rate(one_s),
        one_s / v2_s
    );
    match (small_rss, v2_rss) {
        (Some(small), Some(large)) => println!(
            "  peak RSS: {:.1} MB on {} records, {:.1} MB on {MILLION} ({:.2}x for 10x the file)",
            small as f64 / 1024.0,
            MILLION / 10,
            large as f64 / 1024.0,
            large as f64 / small as f64
        ),
        _ => println!("  peak RSS: not measured (GNU time missing)"),
    }
}

/// The shortest wall time of three runs of a command (which must succeed), and its peak RSS in
/// KiB when GNU time is there to tell.
fn best_of_three(command: impl Fn() -> std::process::Command) -> (f64, Option<u64>) {
    let gnu_time = std::path::Path::new("/usr/bin/time").exists();
    let mut best = (f64::INFINITY, None);
    for _ in 0..3 {
        let inner = command();
        let mut cmd = if gnu_time {
            let mut cmd = std::process::Command::new("/usr/bin/time");
            cmd.args(["-f", "%M"])
                .arg(inner.get_program())
                .args(inner.get_args());
            cmd
        } else {
            inner
        };
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rss = String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok());
        if secs < best.0 {
            best = (secs, rss);
        }
    }
    best
}

criterion_group!(benches, append, verification);

fn main() {
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let only = |name: &str| filter.as_deref().is_some_and(|f| f.contains(name));
    if filter.is_none() || only("rotation") {
        rotation_latency();
    }
    if filter.is_none() || only("1m") {
        verify_million();
    }
    if !only("rotation") && !only("1m") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
