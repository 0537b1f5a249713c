#!/usr/bin/env python3
"""Durable workspaces (docs/snapshot.md): what a snapshot costs and saves, against re-prefilling and
against llama-server.

  restore    a workspace of ~5.4k tokens (this repository's sources) is prefilled once (the
             re-prefill it saves), written, then restored as forks of it: from the page cache, and
             cold (the snapshot file dropped from the page cache with posix_fadvise DONTNEED first);
             the daemon logs each restore's time (read, checks, session).
  restart    the first ask after a daemon restart (a SIGTERM writes the workspace; the ask restores
             it) against a warm ask on the same workspace, and against the same ask on a fresh
             workspace that must prefill the files (what a restart cost before).
  six        six workspaces of ~2.5k tokens each, asked in turn (--turns rounds, a question each,
             greedy --decode tokens): modeld with every workspace resident, modeld with a memory
             budget that holds two sessions (the others spilled to disk and restored on their turn),
             and llama-server with six slots and the files in each conversation's messages. Peak RSS
             (VmHWM) of each server, time to first token of the warm turns (turn >= 1).

  python3 bench/durable.py --model ~/.cache/modeld/models/bench-coder-0.5b.gguf --out build-bench/durable.json

Only the Python standard library is used.
"""
import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_loop import ROOT, free_port, stream_chat  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sources():
    out = []
    for d in ["src/core", "src/daemon", "src/workspace", "src/llama", "src/client", "src/snapshot", "src/cli",
              "src/format", "src/wire"]:
        for f in sorted(os.listdir(os.path.join(ROOT, d))):
            if f.endswith(".cpp") and not f.endswith("_test.cpp"):
                out.append(f"{d}/{f}")
    return out


def read(rel, limit):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        t = f.read()
    if len(t) <= limit:
        return t
    return t[:t.rfind("\n", 0, limit) + 1]


def files_of(paths, chars):
    """Files from `paths` until about `chars` characters (~4 per token)."""
    out, n = {}, 0
    for p in paths:
        if n >= chars:
            break
        c = read(p, min(6000, chars - n))
        out[p] = c
        n += len(c)
    return out


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


class Modeld:
    def __init__(self, args, work, extra=(), name="modeld"):
        self.port = free_port()
        self.token = secrets.token_hex(24)
        tok = os.path.join(work, "token")
        with open(tok, "w") as f:
            f.write(self.token + "\n")
        os.chmod(tok, 0o600)
        self.log_path = os.path.join(work, f"{name}.log")
        self.snapdir = os.path.join(work, "snapshots")
        cmd = [args.modeld, "serve", "--socket", os.path.join(work, "sock"), "--port", str(self.port),
               "--token-file", tok, "--model", args.model, "--threads", str(args.threads), "--ctx-size",
               str(args.ctx), "--chat-template-file", args.template, "--snapshot-dir", self.snapdir, *extra]
        self.logf = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"modeld exited; log {self.log_path}")
            try:
                if self.call("GET", "/v1/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)

    def call(self, method, path, body=None, timeout=1800):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, None if body is None else json.dumps(body),
                      {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def ok(self, method, path, body=None):
        st, b = self.call(method, path, body)
        if st != 200:
            raise SystemExit(f"modeld: {method} {path}: {st} {b[:300]}")
        return json.loads(b) if b.startswith("{") else b

    def workspace(self, ws, files):
        self.ok("POST", "/v1/sessions", {"workspace": ws, "config": {"n_ctx": ARGS.ctx}})
        for p, c in files.items():
            self.ok("POST", f"/v1/workspaces/{ws}/files", {"path": p, "content": c, "prefill": False})

    def ask(self, ws, q, max_tokens=16):
        """Native ask, streamed: seconds to the first chunk and the done event's result."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        try:
            t0 = time.perf_counter()
            c.request("POST", f"/v1/workspaces/{ws}/ask", json.dumps({"question": q, "max_tokens": max_tokens}),
                      {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
            r = c.getresponse()
            first, result = None, None
            for raw in r:
                j = json.loads(raw)
                if j.get("event") == "chunk" and first is None and j.get("text"):
                    first = time.perf_counter() - t0
                if j.get("event") == "done":
                    result = j["result"]
                if j.get("event") == "error":
                    raise SystemExit(f"modeld ask: {j}")
            return (first if first is not None else time.perf_counter() - t0), result
        finally:
            c.close()

    def restores(self):
        with open(self.log_path) as f:
            return [tuple(float(x) for x in m.groups()) for m in re.finditer(
                r"restored \((\d+) tokens\) in ([\d.]+) ms \(read ([\d.]+), checked ([\d.]+), session ([\d.]+)\)",
                f.read())]

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait()
        self.logf.close()


def bench_restore_and_restart(args, work):
    res = {}
    files = files_of(sources(), args.big_chars)
    m = Modeld(args, work)
    m.workspace("big", files)
    t0 = time.perf_counter()
    p = m.ok("POST", "/v1/workspaces/big/prefill", {})
    res["prefill_s"] = time.perf_counter() - t0
    res["tokens"] = p["tokens_resident"]
    log(f"restore: workspace of {res['tokens']} tokens prefilled in {res['prefill_s']:.1f} s")
    m.ok("GET", "/v1/snapshots/big")  # written now
    res["snapshot_mib"] = os.path.getsize(os.path.join(m.snapdir, "ws-big.snap")) / 2**20
    warm, cold = [], []
    for i in range(args.repeat):
        for kind in ("warm", "cold"):
            ws = f"big-{kind}-{i}"
            m.ok("POST", "/v1/snapshots/big/fork", {"to": ws})
            path = os.path.join(m.snapdir, f"ws-{ws}.snap")
            if kind == "cold":
                fd = os.open(path, os.O_RDONLY)
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            else:
                with open(path, "rb") as f:  # in the page cache
                    while f.read(1 << 20):
                        pass
            before = len(m.restores())
            m.ok("GET", f"/v1/workspaces/{ws}")
            r = m.restores()[before]
            (warm if kind == "warm" else cold).append(r)
            m.ok("DELETE", f"/v1/sessions/{ws}")
    res["restore_page_cache"] = warm
    res["restore_cold"] = cold
    # The first ask after a restart, against a warm ask and a cold one.
    q = "Which of these files handles snapshots, and how?"
    _, _ = m.ask("big", q)  # the conversation so far: one turn
    m.stop()
    m = Modeld(args, work)
    ttft_restart, r1 = m.ask("big", q + " (again)")
    ttft_warm, r2 = m.ask("big", q + " (once more)")
    m.workspace("fresh", files)
    ttft_cold, r3 = m.ask("fresh", q + " (again)")
    res["restart"] = {"first_ask_after_restart_s": ttft_restart, "warm_ask_s": ttft_warm,
                      "fresh_workspace_ask_s": ttft_cold,
                      "prefilled": [r1["prefix"]["tokens_prefilled"] + r1["suffix"]["tokens_prefilled"],
                                    r2["prefix"]["tokens_prefilled"] + r2["suffix"]["tokens_prefilled"],
                                    r3["prefix"]["tokens_prefilled"] + r3["suffix"]["tokens_prefilled"]],
                      "restores": m.restores()}
    m.stop()
    return res


def bench_six(args, work):
    paths = sources()
    per = len(paths) // 6
    sets = [files_of(paths[i * per:(i + 1) * per], args.six_chars) for i in range(6)]
    questions = ["What does the first file do?", "Where could this code fail on bad input?",
                 "Which function would you test first, and why?", "Summarize the error handling."]
    out = {}
    runs = [("modeld all resident", []), ("modeld spilling", ["--kv-budget-mb", str(args.spill_budget_mb)])]
    for name, extra in runs:
        d = os.path.join(work, name.replace(" ", "-"))
        os.makedirs(d)
        m = Modeld(args, d, extra)
        for i, fs in enumerate(sets):
            m.workspace(f"w{i}", fs)
        ttft = {}
        for t in range(args.turns):
            for i in range(6):
                s, r = m.ask(f"w{i}", questions[t % len(questions)])
                ttft.setdefault(t, []).append(s)
                log(f"{name}: turn {t} w{i}: ttft {s:.2f} s, prefilled "
                    f"{r['prefix']['tokens_prefilled'] + r['suffix']['tokens_prefilled']}")
        out[name] = {"ttft": ttft, "peak_rss_mib": peak_rss_mib(m.proc.pid), "restores": len(m.restores())}
        m.stop()
    # llama-server: six slots, the files in each conversation's first message.
    port, token = free_port(), secrets.token_hex(24)
    lp = os.path.join(work, "llama-server.log")
    with open(lp, "w") as lf:
        proc = subprocess.Popen([args.llama_server, "-m", args.model, "--port", str(port), "--api-key", token,
                                 "-c", str(args.ctx * 6), "-np", "6", "-t", str(args.threads), "-tb",
                                 str(args.threads), "--flash-attn", "off", "--jinja", "--chat-template-file",
                                 args.template, "--no-webui", "-a", "bench"], stdout=lf, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited; log {lp}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v1/models", headers={"Authorization": "Bearer " + token})
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.2)
    convs = [[{"role": "user", "content": "Here are the files.\n\n" + "\n\n".join(
        f"File {p}:\n```cpp\n{c}\n```" for p, c in fs.items())}, {"role": "assistant", "content": "OK."}]
             for fs in sets]
    ttft = {}
    for t in range(args.turns):
        for i in range(6):
            convs[i].append({"role": "user", "content": questions[t % len(questions)]})
            r = stream_chat(port, token, "bench", convs[i], 16, 1800, "llama-server")
            convs[i].append({"role": "assistant", "content": r["text"]})
            s = (r["t_first"] or r["t_end"]) - r["t_send"]
            ttft.setdefault(t, []).append(s)
            log(f"llama-server: turn {t} w{i}: ttft {s:.2f} s, prefilled {r['timings'].get('prompt_n')}")
    out["llama-server"] = {"ttft": ttft, "peak_rss_mib": peak_rss_mib(proc.pid)}
    proc.terminate()
    proc.wait()
    return out


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--modeld", default=os.path.join(ROOT, "build/bin/modeld"))
    ap.add_argument("--llama-server", default=os.path.join(ROOT, "build-bench/llama.cpp/bin/llama-server"))
    ap.add_argument("--template", default=os.path.join(ROOT, "third_party/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--big-chars", type=int, default=19000, help="~5.4k tokens")
    ap.add_argument("--six-chars", type=int, default=9000, help="~2.5k tokens per workspace")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spill-budget-mb", type=int, default=800)
    ap.add_argument("--only", choices=["restore", "six"], default=None)
    ap.add_argument("--out", default=None)
    ARGS = args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="modeld-durable-")
    res = {"load_before": open("/proc/loadavg").read().split()[:3]}
    try:
        if args.only in (None, "restore"):
            res["restore"] = bench_restore_and_restart(args, os.path.join(work, "r") if os.makedirs(
                os.path.join(work, "r")) is None else None)
        if args.only in (None, "six"):
            res["six"] = bench_six(args, work)
    finally:
        log(f"work dir {work}")
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
