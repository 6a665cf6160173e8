#!/usr/bin/env python3
"""Start/stop latency of `firma sidecar start --detach` and `firma sidecar stop`.

Each run uses a throwaway world (temp HOME, XDG dirs, state dir) with `firma init` on port 0.

start: how long after the Sidecar's own `ready` log line (its JSON `timestamp`) the launcher has
       exited with 0.  Baseline in the same run ("hand-rolled"): the guide's `firma authority &` /
       `firma sidecar &` pattern, with a shell-style loop that checks the Sidecar port every
       100 ms; measured the same way (detection time minus the `ready` line).
stop:  wall time of `firma sidecar stop` with the pair running and the Sidecar's gRPC streams open
       to the Authority.  Baseline: the hand-rolled `kill -TERM` of both pids (Sidecar first)
       followed by a 100 ms `kill -0` loop until both are gone.

Usage: python3 benches/lifecycle_start_stop.py [--firma target/debug/firma] [--runs 15]
Prints the medians and the ratios against the baselines.
"""
import argparse, datetime, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def world(firma):
    root = tempfile.mkdtemp(prefix="firma-bench-")
    for d in ("home", "data", "config", "runtime", "state", "ws"):
        os.makedirs(os.path.join(root, d))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": f"{root}/home",
        "XDG_DATA_HOME": f"{root}/data",
        "XDG_CONFIG_HOME": f"{root}/config",
        "XDG_RUNTIME_DIR": f"{root}/runtime",
        "FIRMA_STATE_DIR": f"{root}/state",
        "NO_COLOR": "1",
    }
    for k in ("FIRMA_TEST_SIDECAR_EXE", "FIRMA_TEST_AUTHORITY_EXE"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    subprocess.run(
        [firma, "init", "--yes", "--agent", "codex", "--provider", "anthropic",
         "--authority-listen", "127.0.0.1:0", "--sidecar-listen", "127.0.0.1:0"],
        cwd=f"{root}/ws", env=env, check=True, stdout=subprocess.DEVNULL)
    return root, env


def ready_ts(log):
    """Timestamp (epoch seconds) of the first `ready` JSON line in a log."""
    with open(log) as f:
        for line in f:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("message") == "ready":
                ts = v["timestamp"].replace("Z", "+00:00")
                # fromisoformat handles at most 6 fractional digits
                if "." in ts:
                    head, rest = ts.split(".", 1)
                    frac, tz = rest[:-6], rest[-6:]
                    ts = f"{head}.{frac[:6]}{tz}"
                return datetime.datetime.fromisoformat(ts).timestamp()
    raise RuntimeError(f"no ready line in {log}")


def wait_ready_line(log, deadline):
    while time.time() < deadline:
        try:
            return ready_ts(log)
        except (RuntimeError, FileNotFoundError, KeyError):
            time.sleep(0.1)
    raise RuntimeError(f"timeout waiting for ready in {log}")


def ours(firma, runs):
    start, stop = [], []
    for _ in range(runs):
        root, env = world(firma)
        state = env["FIRMA_STATE_DIR"]
        try:
            subprocess.run([firma, "sidecar", "start", "--detach"], cwd=f"{root}/ws", env=env,
                           check=True, stdout=subprocess.DEVNULL)
            returned = time.time()
            start.append((returned - ready_ts(f"{state}/sidecar.log")) * 1000)
            time.sleep(0.3)  # let the Sidecar's streams to the Authority settle
            t0 = time.perf_counter()
            subprocess.run([firma, "sidecar", "stop"], cwd=f"{root}/ws", env=env, check=True,
                           stdout=subprocess.DEVNULL)
            stop.append((time.perf_counter() - t0) * 1000)
        finally:
            subprocess.run([firma, "sidecar", "stop", "--timeout", "0.5"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(root, ignore_errors=True)
    return start, stop


def port_open(addr):
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.1).close()
        return True
    except OSError:
        return False


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def hand_rolled(firma, runs):
    start, stop = [], []
    for _ in range(runs):
        root, env = world(firma)
        state = env["FIRMA_STATE_DIR"]
        config = f"{root}/ws/.firma/firma.toml"
        procs = []
        try:
            with open(f"{state}/authority.log", "w") as alog:
                a = subprocess.Popen(
                    [env.get("FIRMA_TEST_AUTHORITY_EXE") or firma, "authority", "--config", config,
                     "--state-dir", state], env=env, stdout=alog, stderr=alog,
                    start_new_session=True)
            procs.append(a)
            deadline = time.time() + 60
            wait_ready_line(f"{state}/authority.log", deadline)
            with open(f"{state}/authority.log") as f:
                addr = next(json.loads(l)["addr"] for l in f
                            if l.startswith("{") and json.loads(l).get("message") == "ready")
            sidecar_env = dict(env)
            # A stand-in Sidecar (test hook) needs a NOTIFY_SOCKET it can send to.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(f"{state}/.bench.sock")
            sidecar_env["NOTIFY_SOCKET"] = f"{state}/.bench.sock"
            with open(f"{state}/sidecar.log", "w") as slog:
                s = subprocess.Popen(
                    [env.get("FIRMA_TEST_SIDECAR_EXE") or firma, "sidecar", "--config", config,
                     "--state-dir", state, "--authority-url", f"http://{addr}"],
                    env=sidecar_env, stdout=slog, stderr=slog, start_new_session=True)
            procs.append(s)
            # The typical script: `until nc -z host port; do sleep 0.1; done`.
            listen = None
            while time.time() < deadline:
                try:
                    with open(f"{state}/sidecar.log") as f:
                        for l in f:
                            if l.startswith("{"):
                                v = json.loads(l)
                                if v.get("message") == "ready":
                                    listen = v.get("addr") or v.get("listen")
                except (OSError, ValueError):
                    pass
                if listen and port_open(listen):
                    break
                time.sleep(0.1)
            start.append((time.time() - ready_ts(f"{state}/sidecar.log")) * 1000)
            sock.close()
            time.sleep(0.3)
            t0 = time.perf_counter()
            for p in (s, a):
                os.kill(p.pid, signal.SIGTERM)
            while any(alive(p.pid) for p in procs):
                time.sleep(0.1)
            stop.append((time.perf_counter() - t0) * 1000)
        finally:
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
            shutil.rmtree(root, ignore_errors=True)
    return start, stop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--firma", default=os.path.join(ROOT, "target/debug/firma"))
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    firma = os.path.abspath(args.firma)
    s1, t1 = ours(firma, args.runs)
    s0, t0 = hand_rolled(firma, args.runs)
    m = statistics.median
    print(f"binary: {firma}; runs: {args.runs}")
    print(f"start --detach returns after sidecar `ready`: median {m(s1):.1f} ms "
          f"(min {min(s1):.1f}, max {max(s1):.1f}); target <= 100 ms")
    print(f"  baseline hand-rolled 100 ms poll loop:      median {m(s0):.1f} ms; "
          f"ratio ours/baseline = {m(s1) / m(s0):.2f}")
    print(f"graceful stop, sidecar streams open:          median {m(t1):.1f} ms "
          f"(min {min(t1):.1f}, max {max(t1):.1f}); target <= 300 ms")
    print(f"  baseline hand-rolled kill + 100 ms poll:     median {m(t0):.1f} ms; "
          f"ratio ours/baseline = {m(t1) / m(t0):.2f}")


if __name__ == "__main__":
    sys.exit(main())
