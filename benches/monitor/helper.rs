//! Helper for `benches/monitor.sh`.
//!
//! `monitor-bench gen <file> <records> <deny-percent>`: write a realistic `audit.jsonl`
//! (canonical JSON lines, ~500 bytes each, chained `prev` hashes, time-ordered `ts` ending
//! now, the given share of denies).
//!
//! `monitor-bench parse <file> <lines> <reps>`: nanoseconds per line of the audit source's
//! parse on the file's first lines, canonical (fast path) and not (serde_json), median of reps.
//!
//! `monitor-bench latency <file> <count> -- <command…>`: run the command (a follower of
//! `<file>`: `firma monitor …` or `tail -F …`), append `<count>` records one at a time, and
//! print the delay from each append to the moment its line shows up on the command's stdout
//! (p50, p99, max in microseconds, as one JSON line).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn hex(&mut self, bytes: usize) -> String {
        (0..bytes)
            .map(|_| format!("{:02x}", self.next() as u8))
            .collect()
    }
}

const CLASSES: &[&str] = &[
    "communication.external.send",
    "network.http.read",
    "storage.object.write",
    "code.repository.push",
    "payment.charge.create",
];
const HOSTS: &[&str] = &[
    "api.github.com",
    "api.openai.com",
    "hooks.slack.com",
    "api.stripe.com",
    "storage.googleapis.com",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE"];

/// One canonical record (keys in RFC 8785 order, no whitespace).
fn record(rng: &mut Rng, seq: u64, ts: &str, decision: &str, prev: &str, marker: &str) -> String {
    let class = rng.pick(CLASSES);
    let host = rng.pick(HOSTS);
    let method = rng.pick(METHODS);
    let reason = match decision {
        "deny" => format!("policy forbids {class}{marker}"),
        "passthrough" => format!("unmapped traffic passed through{marker}"),
        _ => format!("permitted by policy{marker}"),
    };
    let sig: String = {
        let raw: Vec<u8> = (0..64).map(|_| rng.next() as u8).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    format!(
        concat!(
            r#"{{"agent_id":"codex-{agent}","decision":"{decision}","event_id":"{event}","#,
            r#""intent":{{"action_class":"{class}","host":"{host}","method":"{method}","path":"/v1/{p1}/{p2}"}},"#,
            r#""latency_us":{lat},"policy":{{"bundle":"bundle-{bundle}","determining":["policy-{pol}"]}},"#,
            r#""prev":"{prev}","reason":"{reason}","seq":{seq},"session_id":"sess-{sess}","sig":"{sig}","#,
            r#""token_id":"tok-{tok}","ts":"{ts}","v":1}}"#
        ),
        agent = rng.next() % 8,
        decision = decision,
        event = rng.hex(16),
        class = class,
        host = host,
        method = method,
        p1 = rng.hex(4),
        p2 = rng.hex(6),
        lat = 40 + rng.next() % 4000,
        bundle = rng.next() % 20,
        pol = rng.next() % 50,
        prev = prev,
        reason = reason,
        seq = seq,
        sess = rng.hex(8),
        sig = sig,
        tok = rng.hex(12),
        ts = ts,
    )
}

fn generate(path: &str, records: u64, deny_percent: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create"));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let now = chrono::Utc::now();
    // One record every 10 ms, ending now: 1M records span ~2.8 hours.
    let step = chrono::Duration::milliseconds(10);
    let start = now - step * records as i32;
    let mut prev = "0".repeat(64);
    for seq in 1..=records {
        let ts = (start + step * seq as i32).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let roll = rng.next() % 100;
        let decision = if roll < deny_percent {
            "deny"
        } else if roll < deny_percent + 5 {
            "passthrough"
        } else {
            "allow"
        };
        let line = record(&mut rng, seq, &ts, decision, &prev, "");
        prev = hex::encode(Sha256::digest(line.as_bytes()));
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn latency(path: &str, count: usize, command: &[String]) {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn follower");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let seen = Instant::now();
            if let Some(at) = line.find("#mark-") {
                let tag: String = line[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if tx.send((tag, seen)).is_err() {
                    break;
                }
            }
        }
    });
    let mut file = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    let mut rng = Rng(42);
    let mut seq = 10_000_000u64;
    let mut append = |rng: &mut Rng, tag: &str| {
        seq += 1;
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut line = record(
            rng,
            seq,
            &ts,
            "deny",
            &"0".repeat(64),
            &format!(" #mark-{tag}"),
        );
        line.push('\n');
        let start = Instant::now();
        file.write_all(line.as_bytes()).unwrap();
        start
    };
    // Wait until the follower is reading: append warm-up lines until one comes through.
    let mut ready = false;
    for i in 0..200 {
        append(&mut rng, &format!("warm{i}"));
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            ready = true;
            break;
        }
    }
    assert!(ready, "the follower never showed an appended line");
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    let mut delays = Vec::with_capacity(count);
    for i in 0..count {
        let tag = format!("n{i}");
        let start = append(&mut rng, &tag);
        loop {
            let (got, seen) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("line never arrived");
            if got == tag {
                delays.push(seen.duration_since(start).as_micros());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2 + rng.next() % 8));
    }
    let _ = child.kill();
    let _ = child.wait();
    delays.sort_unstable();
    println!(
        "{{\"count\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
}

/// Nanoseconds per line of the audit source's `parse` on `path`'s first lines: as written
/// (canonical: the fast path) and with a leading space (not canonical: serde_json decides).
fn parse_speed(path: &str, lines: usize, reps: usize) {
    let source = firma::monitor::find_source("audit").expect("the audit source");
    let mut text = Vec::new();
    use std::io::Read;
    std::fs::File::open(path)
        .expect("open")
        .take(lines as u64 * 2048)
        .read_to_end(&mut text)
        .expect("read");
    let canonical: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .take(lines)
        .collect();
    let spaced: Vec<Vec<u8>> = canonical.iter().map(|l| [b" ", *l].concat()).collect();
    let time = |lines: &mut dyn Iterator<Item = &[u8]>| {
        let start = Instant::now();
        let mut count = 0usize;
        for line in lines {
            let record = source.parse(line, 0);
            assert!(record.time.is_some(), "{}", String::from_utf8_lossy(line));
            count += 1;
        }
        start.elapsed().as_nanos() as f64 / count as f64
    };
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        fast.push(time(&mut canonical.iter().copied()));
        slow.push(time(&mut spaced.iter().map(Vec::as_slice)));
    }
    fast.sort_by(f64::total_cmp);
    slow.sort_by(f64::total_cmp);
    println!(
        "{{\"lines\":{},\"fast_ns\":{:.0},\"serde_ns\":{:.0}}}",
        canonical.len(),
        fast[reps / 2],
        slow[reps / 2]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 4 => generate(
            &args[1],
            args[2].parse().expect("records"),
            args[3].parse().expect("deny percent"),
        ),
        Some("parse") if args.len() == 4 => parse_speed(
            &args[1],
            args[2].parse().expect("lines"),
            args[3].parse().expect("reps"),
        ),
        Some("latency") if args.len() > 4 && args[3] == "--" => {
            latency(&args[1], args[2].parse().expect("count"), &args[4..])
        }
        _ => {
            eprintln!(
                "usage: monitor-bench gen <file> <records> <deny-percent>\n       \
                 monitor-bench latency <file> <count> -- <command…>\n       \
                 monitor-bench parse <file> <lines> <reps>"
            );
            std::process::exit(2);
        }
    }
}
