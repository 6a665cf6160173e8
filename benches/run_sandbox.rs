//! `firma run` start-up with and without the sandbox (issue #14: set-up adds ≤ 50 ms).
//!
//! One throwaway project and daemon; then `firma run generic -- true` alternately with
//! `--sandbox off` (the baseline) and the default sandbox, `BENCH_RUNS` times each (default 20).
//! Prints both medians, their difference (the sandbox's set-up cost) and their ratio.
//! Run: `cargo bench --bench run_sandbox`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{FIRMA, World};

/// `firma <args>` in `world`, which must succeed (not polled: `timed` measures it).
fn must(world: &World, args: &[&str]) {
    let out = world.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "firma {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(world: &World, flags: &[&str]) -> Duration {
    let mut args = vec!["run", "generic", "--quiet"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "true"]);
    let start = Instant::now();
    must(world, &args);
    start.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let world = World::new();
    must(
        &world,
        &[
            "init",
            "--yes",
            "--agent",
            "generic",
            "--authority-listen",
            "127.0.0.1:0",
            "--sidecar-listen",
            "127.0.0.1:0",
        ],
    );
    let _daemon = world.start_detached();
    assert!(Path::new(FIRMA).is_file());
    // Warm up both paths (page cache, the CA bundle, the agent's dirs).
    timed(&world, &["--sandbox", "off"]);
    timed(&world, &[]);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        off.push(timed(&world, &["--sandbox", "off"]));
        on.push(timed(&world, &[]));
    }
    let (off, on) = (median(off), median(on));
    let added = on.saturating_sub(off);
    println!(
        "firma run generic -- true, median of {runs}: --sandbox off {:.1} ms, sandboxed {:.1} ms",
        off.as_secs_f64() * 1e3,
        on.as_secs_f64() * 1e3
    );
    println!(
        "sandbox set-up adds {:.1} ms (target <= 50 ms); ratio sandboxed/off {:.2}x",
        added.as_secs_f64() * 1e3,
        on.as_secs_f64() / off.as_secs_f64()
    );
}
