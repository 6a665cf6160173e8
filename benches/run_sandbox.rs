//! `firma run` start-up with and without the sandbox (issue #14: set-up adds ≤ 50 ms).
//!
//! One throwaway project and daemon; then `firma run generic -- true` alternately with
//! `--sandbox off` (the baseline) and the default sandbox, `BENCH_RUNS` times each (default 20).
//! Prints both medians, their difference (the sandbox's set-up cost) and their ratio.
//! Run: `cargo bench --bench run_sandbox`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FIRMA: &str = env!("CARGO_BIN_EXE_firma");

/// A throwaway HOME, XDG dirs and state dir, as the tests build them.
struct World(tempfile::TempDir);

impl World {
    fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("firma-bench-run-")
            .tempdir()
            .unwrap();
        for dir in ["home", "data", "runtime", "state", "ws"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        Self(root)
    }

    fn firma(&self, args: &[&str]) -> Command {
        let root = self.0.path();
        let mut cmd = Command::new(FIRMA);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", root.join("home"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_RUNTIME_DIR", root.join("runtime"))
            .env("FIRMA_STATE_DIR", root.join("state"))
            .current_dir(root.join("ws"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn must(&self, args: &[&str]) {
        let out = self.firma(args).output().unwrap();
        assert!(
            out.status.success(),
            "firma {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Stops the daemon, also when the bench panics.
struct Daemon<'a>(&'a World);

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.0.firma(&["sidecar", "stop"]).output();
    }
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
    world.must(&args);
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
    world.must(&[
        "init",
        "--yes",
        "--agent",
        "generic",
        "--authority-listen",
        "127.0.0.1:0",
        "--sidecar-listen",
        "127.0.0.1:0",
    ]);
    world.must(&["sidecar", "start", "--detach"]);
    let _daemon = Daemon(&world);
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
