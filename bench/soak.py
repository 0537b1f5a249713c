#!/usr/bin/env python3
"""Soak: one daemon, concurrent workspace clients, for --minutes (docs/RELIABILITY.md, "Soak").

Starts `modeld serve` on a private socket and runs, until the time is up:
  * one thread per workspace (--workspaces, default 4): puts of edited files, asks with small
    max_tokens, occasional hang-ups mid-stream, explicit compactions (POST .../compact, some with
    keep_turns), turns, renames, and reads of the assembled context;
  * one thread hammering GET /v1/health and GET /v1/workspaces/{ws};
  * a sampler: every --sample-s seconds the daemon's threads, open descriptors and VmRSS, to --csv.
Every reply must be 2xx or a typed error (`{"error":{"code":...}}`, as a plain reply or as a
stream's `error` event); a stream must end with `done` or `error`. An untyped reply, a
connection error, a truncated stream or a daemon that dies is a failure. At the end the daemon is
stopped (SIGTERM; killed if it does not exit in 10 s) and a summary printed; the exit status is 1
on any failure, or if threads, descriptors or RSS grew (see the verdict lines).

  nice -n 10 python3 bench/soak.py --modeld /tmp/soak/modeld --model /tmp/soak/tiny.gguf --minutes 10

Standard library only.
"""
import argparse, collections, csv, http.client, json, os, random, signal, socket, statistics, subprocess, sys
import tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--modeld", default="build/bin/modeld")
ap.add_argument("--model", required=True)
ap.add_argument("--minutes", type=float, default=10)
ap.add_argument("--workspaces", type=int, default=4)
ap.add_argument("--n-ctx", type=int, default=4096)
ap.add_argument("--sample-s", type=float, default=5)
ap.add_argument("--csv", default="/tmp/soak/soak.csv")
ap.add_argument("--log", default="/tmp/soak/soak-daemon.log", help="the daemon's stderr")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--max-threads-growth", type=int, default=8)
ap.add_argument("--max-fds-growth", type=int, default=16)
ap.add_argument("--max-rss-slope", type=float, default=1.0, help="MiB/min over the last 5 minutes")
ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for modeld serve")
args = ap.parse_args()

SOCK = os.path.join(tempfile.mkdtemp(prefix="modeld-soak-"), "m.sock")
DEADLINE = 0.0
lock = threading.Lock()
counts = collections.Counter()  # (kind, outcome) -> n
failures = []  # (time, kind, what)
health_ms = []
stop_all = threading.Event()


class UConn(http.client.HTTPConnection):
    def __init__(self, timeout=120):
        super().__init__("localhost", timeout=timeout)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(SOCK)
        self.sock = s


def count(kind, outcome):
    with lock:
        counts[(kind, outcome)] += 1


def fail(kind, what):
    with lock:
        counts[(kind, "FAIL")] += 1
        failures.append((time.monotonic() - T0, kind, what[:300]))


def typed_error(data):
    try:
        j = json.loads(data)
    except Exception:
        return None
    if isinstance(j, dict) and isinstance(j.get("error"), dict) and isinstance(j["error"].get("code"), str):
        return j["error"]
    return None


def classify(kind, status, data):
    """Counts a plain reply; returns (json or None, error code or None)."""
    if 200 <= status < 300:
        count(kind, f"{status}")
        try:
            return json.loads(data), None
        except Exception:
            fail(kind, f"HTTP {status} with a body that is not JSON: {data[:100]!r}")
            return None, None
    e = typed_error(data)
    if e is None:
        fail(kind, f"untyped HTTP {status}: {data[:200]!r}")
        return None, None
    count(kind, f"{status} {e['code']}")
    return None, e["code"]


def req(kind, method, path, body=None, timeout=120):
    try:
        c = UConn(timeout)
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        d = r.read()
        c.close()
    except Exception as e:
        fail(kind, f"{method} {path}: connection error {e!r}")
        return None, "connection"
    return classify(kind, r.status, d)


def ask(ws, body, hangup=False, timeout=300):
    """An ask; with hangup, the connection is closed after the first event. Returns the error code."""
    kind = "ask-hangup" if hangup else "ask"
    try:
        c = UConn(timeout)
        c.request("POST", f"/v1/workspaces/{ws}/ask", body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            d = r.read()
            c.close()
            return classify(kind, r.status, d)[1]
        last = None
        while True:
            line = r.readline()
            if not line:
                break
            try:
                ev = json.loads(line)
            except Exception:
                fail(kind, f"stream line is not JSON: {line[:100]!r}")
                c.close()
                return "bad"
            if ev.get("event") not in ("progress", "chunk", "done", "error"):
                fail(kind, f"unknown stream event: {line[:100]!r}")
            last = ev
            if hangup:
                c.close()  # hang up mid-stream
                count(kind, "hung up")
                return None
            if ev.get("event") in ("done", "error"):
                break
        c.close()
    except Exception as e:
        fail(kind, f"ask {ws}: connection error {e!r}")
        return "connection"
    if last is None or last.get("event") not in ("done", "error"):
        fail(kind, f"stream of {ws} ended without done/error (last: {last!r})"[:300])
        return "truncated"
    if last["event"] == "done":
        count(kind, "200 done")
        return None
    e = last.get("error")
    if not isinstance(e, dict) or not isinstance(e.get("code"), str):
        fail(kind, f"untyped stream error: {last!r}")
        return "untyped"
    count(kind, f"200 stream-error {e['code']}")
    return e["code"]


# --------------------------------------------------------------------------------------------


def source(tag, n):
    return [f"int {tag}_{i}(int x) {{ return x * {i} + {i % 7}; }}" for i in range(n)]


def workspace_client(i):
    rnd = random.Random(args.seed * 1000 + i)
    ws = f"soak{i}"

    def open_ws():
        req("open", "POST", "/v1/sessions", {"workspace": ws, "config": {"n_ctx": args.n_ctx}})
        req("stable", "POST", f"/v1/workspaces/{ws}/stable", {"system": "You are a coding assistant."})

    open_ws()
    files = {f"src/{ws}_{k}.c": source(f"f{k}", 30) for k in range(3)}
    for path, lines in files.items():
        req("put", "POST", f"/v1/workspaces/{ws}/files", {"path": path, "content": "\n".join(lines) + "\n"})
    edits = 0
    while time.monotonic() < DEADLINE and not stop_all.is_set():
        x = rnd.random()
        code = None
        if x < 0.50:  # edit one to three lines of one file (sometimes add or drop a line), put it
            path = rnd.choice(sorted(files))
            lines = files[path]
            for _ in range(rnd.randint(1, 3)):
                j = rnd.randrange(len(lines))
                edits += 1
                lines[j] = lines[j].split(" //")[0] + f" // edit {edits}"
            if rnd.random() < 0.1 and len(lines) < 60:
                lines.insert(rnd.randrange(len(lines)), f"int extra_{edits};")
            elif rnd.random() < 0.1 and len(lines) > 10:
                lines.pop(rnd.randrange(len(lines)))
            _, code = req("put", "POST", f"/v1/workspaces/{ws}/files", {"path": path, "content": "\n".join(lines) + "\n"})
        elif x < 0.78:
            code = ask(ws, {"question": f"what does line {rnd.randint(1, 30)} do?", "max_tokens": rnd.randint(1, 8)})
        elif x < 0.83:
            ask(ws, {"question": "explain everything", "max_tokens": 64}, hangup=True)
        elif x < 0.85:  # rarer than the notes filling up: background compactions run too
            body = {} if rnd.random() < 0.5 else {"keep_turns": rnd.choice([2, 6, 20])}
            _, code = req("compact", "POST", f"/v1/workspaces/{ws}/compact", body)
        elif x < 0.90:
            _, code = req("turn", "POST", f"/v1/workspaces/{ws}/turns", {"role": "user", "text": f"note {edits}"})
        elif x < 0.94:  # rename a file away and back
            path = rnd.choice(sorted(files))
            _, code = req("rename", "POST", f"/v1/workspaces/{ws}/files/rename", {"from": path, "to": path + ".tmp"})
            if code is None:
                _, code = req("rename", "POST", f"/v1/workspaces/{ws}/files/rename", {"from": path + ".tmp", "to": path})
        elif x < 0.97:
            _, code = req("context", "GET", f"/v1/workspaces/{ws}/context")
        else:
            _, code = req("report", "GET", f"/v1/sessions/{ws}")
        if code == "context_overflow":  # the conversation filled n_ctx: keep its last turns
            req("compact", "POST", f"/v1/workspaces/{ws}/compact", {"keep_turns": 4})
        elif code in ("session_unavailable", "not_found", "session_closed"):
            open_ws()


def hammer():
    k = 0
    while time.monotonic() < DEADLINE and not stop_all.is_set():
        t0 = time.monotonic()
        _, code = req("health", "GET", "/v1/health", timeout=30)
        if code is None:
            with lock:
                health_ms.append((time.monotonic() - t0) * 1000)
        req("ws-info", "GET", f"/v1/workspaces/soak{k % args.workspaces}", timeout=30)
        k += 1
        time.sleep(0.01)


def proc_sample(pid):
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, v = line.partition(":")
            st[key] = v.strip()
    return int(st["Threads"]), len(os.listdir(f"/proc/{pid}/fd")), int(st["VmRSS"].split()[0]) / 1024


def total_requests():
    with lock:
        return sum(counts.values())


def slope(points):
    """Least-squares slope of (x, y) points."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else 0.0


ws_stats = []


def metrics():
    try:
        c = UConn(30)
        c.request("GET", "/metrics")
        r = c.getresponse()
        d = r.read().decode()
        c.close()
        return d
    except Exception as e:
        return f"# /metrics failed: {e!r}"


def main():
    global T0, DEADLINE
    busy_samples, metrics_text = 0, ""
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    log = open(args.log, "wb")
    cmd = [os.path.abspath(args.modeld), "serve", "--socket", SOCK, "--model", args.model, "--threads", "1", "--quiet",
           *args.serve_arg]
    daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if os.path.exists(SOCK) or daemon.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        if daemon.poll() is not None:
            print(f"daemon exited at start with {daemon.returncode}; see {args.log}")
            return 1
        T0 = time.monotonic()
        DEADLINE = T0 + args.minutes * 60
        samples = []
        out = open(args.csv, "w", newline="")
        w = csv.writer(out)
        w.writerow(["t_s", "threads", "fds", "rss_mib", "requests"])

        def sample():
            th, fd, rss = proc_sample(daemon.pid)
            row = (round(time.monotonic() - T0, 1), th, fd, round(rss, 1), total_requests())
            samples.append(row)
            w.writerow(row)
            out.flush()

        sample()
        workers = [threading.Thread(target=workspace_client, args=(i,), daemon=True) for i in range(args.workspaces)]
        workers.append(threading.Thread(target=hammer, daemon=True))
        for t in workers:
            t.start()
        died = False
        next_sample = T0 + args.sample_s
        while time.monotonic() < DEADLINE:
            time.sleep(max(0.0, min(next_sample, DEADLINE) - time.monotonic()))
            if daemon.poll() is not None:
                died = True
                fail("daemon", f"the daemon exited with {daemon.returncode} at {time.monotonic() - T0:.0f} s")
                stop_all.set()
                break
            if time.monotonic() >= next_sample:
                sample()
                next_sample += args.sample_s
                if len(samples) % 12 == 1:
                    s = samples[-1]
                    print(f"t={s[0]:.0f}s threads={s[1]} fds={s[2]} rss={s[3]:.1f}MiB requests={s[4]} "
                          f"failures={len(failures)}", flush=True)
        for t in workers:
            t.join(120)
        busy_samples = len(samples)
        if not died and daemon.poll() is None:
            for i in range(args.workspaces):  # what the run did to each workspace
                info, _ = req("final-info", "GET", f"/v1/workspaces/soak{i}")
                if info:
                    ws_stats.append((f"soak{i}", info))
            metrics_text = metrics()
            # The daemon keeps an idle connection worker 30 s for the next connection
            # (ConnectionThreads::kIdleSeconds): wait until they have ended, or 45 s.
            t_idle = time.monotonic()
            while time.monotonic() - t_idle < 45:
                time.sleep(1.0)
                sample()
                if samples[-1][1] <= samples[0][1]:
                    break
        out.close()
    finally:
        stop_s, rc = None, daemon.poll()
        if rc is None:
            t0 = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            try:
                rc = daemon.wait(10)
                stop_s = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                daemon.kill()
                rc = daemon.wait()
        log.close()

    # ---- summary ----
    ok = not failures
    print(f"\nsoak: {args.minutes:g} min, {args.workspaces} workspaces + 1 health/info thread, n_ctx {args.n_ctx}, "
          f"model {os.path.basename(args.model)}; samples every {args.sample_s:g} s in {args.csv}")
    by_kind = collections.defaultdict(dict)
    for (kind, outcome), n in sorted(counts.items()):
        by_kind[kind][outcome] = n
    total = sum(counts.values())
    print(f"requests: {total}")
    for kind, outs in by_kind.items():
        print(f"  {kind:11s} " + ", ".join(f"{o}: {n}" for o, n in outs.items()))
    if health_ms:
        hs = sorted(health_ms)
        print(f"/v1/health latency: median {statistics.median(hs):.1f} ms, p99 {hs[int(0.99 * (len(hs) - 1))]:.1f} ms, "
              f"max {hs[-1]:.1f} ms ({len(hs)} requests)")
    print(f"failures: {len(failures)}")
    for f in failures[:20]:
        print(f"  at {f[0]:.0f} s {f[1]}: {f[2]}")
    for ws, info in ws_stats:
        print(f"  {ws}: files {info['files']}, compactions {info['compactions']} (in place {info['compactions_in_place']}), "
              f"context {info['context_tokens']} tokens (notes {info['note_tokens']}, log {info['log_tokens']})")
    for line in metrics_text.splitlines():
        if line.startswith("modeld_evictions_total") or line.startswith("modeld_sessions "):
            print("  " + line)
    print(f"daemon stop: SIGTERM -> exit {rc}" + (f" in {stop_s:.2f} s" if stop_s is not None else ""))
    if rc != 0:
        ok = False
    if busy_samples >= 2:
        # Under load: the last sample taken while the clients ran against the first minute's
        # median (both count the connections in flight); the first and final samples are the idle
        # daemon before and after.
        loaded = samples[1:busy_samples]
        first_min = [s for s in loaded if s[0] <= 60] or loaded[:1]
        last = loaded[-1]
        verdicts = []
        for idx, name, bound in ((1, "threads", args.max_threads_growth), (2, "fds", args.max_fds_growth)):
            base = statistics.median(s[idx] for s in first_min)
            vals = [s[idx] for s in loaded]
            grow = last[idx] - base
            good = grow <= bound and samples[-1][idx] <= samples[0][idx] + bound
            verdicts.append(good)
            print(f"{name:8s} idle before {samples[0][idx]}, under load: first-minute median {base:g}, last {last[idx]}, "
                  f"max {max(vals)}, min {min(vals)} (last - median {grow:+g}, bound +{bound}); idle after "
                  f"{samples[-1][idx]}: {'flat' if good else 'GROWING'}")
        rss = [s[3] for s in samples[:busy_samples]]
        window = [(s[0] / 60, s[3]) for s in loaded if s[0] >= last[0] - 300]
        sl = slope(window)
        sl_all = slope([(s[0] / 60, s[3]) for s in loaded])
        good = sl <= args.max_rss_slope
        verdicts.append(good)
        print(f"rss_mib  idle before {rss[0]:.1f}, first-minute median {statistics.median(s[3] for s in first_min):.1f}, "
              f"last {rss[-1]:.1f}, max {max(rss):.1f}; slope over the last "
              f"{min(5.0, last[0] / 60):.1f} min {sl:+.2f} MiB/min (whole run {sl_all:+.2f}; bound "
              f"{args.max_rss_slope:g}): {'not growing' if good else 'GROWING'}")
        ok = ok and all(verdicts)
    else:
        ok = False
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


T0 = time.monotonic()
sys.exit(main())
