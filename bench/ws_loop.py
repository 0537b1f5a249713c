#!/usr/bin/env python3
"""The coding loop with a watched directory: `modeld ws watch` plus an unchanged OpenAI client on the
workspace model `ws:bench`, against llama-server's /v1/chat/completions with the whole files in the
messages, as tools like aider re-send them. Same model, same chat template file, same threads,
context and attention path, same edits and questions.

A temporary directory (no git) holds a few of this repository's source files, truncated at a line
boundary (--files, --file-bytes: ~3k tokens by default). modeld serves a workspace `bench` that
`modeld ws watch` keeps in sync with that directory; llama-server gets the files' current contents in
a first user message. Every turn edits one file (the files in turn; a line changed or a line added),
waits --save-lead-ms, and asks a question:

  modeld:        [system, q0, a0, ..., q_t]                    model "ws:bench" (no files: the workspace has them)
  llama-server:  [system, files as they are now, q0, a0, ..., q_t]   (an edit changes an early message)

Each server's own answers are sent back unchanged. Streamed with include_usage, greedy, --decode
tokens. Both servers run at once; the first of them alternates turn by turn. The edit is saved just
before each server's own request (on disk for modeld, where the watcher sees it; in the message for
llama-server), so each gets the same lead from its save to its question.

Per turn and server: prompt tokens, tokens prefilled by the request (`timings.prompt_n`), cached
tokens (`usage.prompt_tokens_details.cached_tokens`), for modeld also the tokens the daemon
prefilled in all during the turn, from the save to the end of the reply (the eager prefill of the
saved edit and finished background compactions included: `modeld_tokens_prefilled_total` of
`GET /metrics`), time to first token from the question and from the save; per run each server's peak
RSS (VmHWM). The goals compare modeld's tokens in all with llama-server's. The goals (issue): on warm turns (turn >= 1), at most 0.15x llama-server's tokens
and at most 0.1x its time to first token from the question, with the save at least 1 s before.

  python3 bench/ws_loop.py --model ~/.cache/modeld/models/bench-coder-0.5b.gguf \\
      --turns 8 --decode 16 --ctx 8192 --threads 2 --flash-attn off --out build-bench/ws-loop.json

Only the Python standard library is used.
"""
import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ from the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openai_loop import ROOT, SOURCES, free_port, stream_chat  # noqa: E402

WORKSPACE = "bench"
SYSTEM_PROMPT = (
    "You are a coding assistant working in the user's repository. Answer briefly and precisely. "
    "When the user edits a file, take the edit into account: name the functions it affects, what could "
    "break and which callers to check. Quote code only when it helps, and never invent files.")
GOAL_TOKENS = 0.15
GOAL_TTFT = 0.10

PROCS = []  # every subprocess started, stopped in reverse order by stop_all()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(cmd, logpath):
    f = open(logpath, "w")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    f.close()
    PROCS.append(p)
    return p


def stop_all():
    for p in reversed(PROCS):
        if p.poll() is None:
            p.terminate()
    for p in reversed(PROCS):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---- the files and the edits ----

def truncated(rel, limit):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        text = f.read()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[:cut + 1 if cut > 0 else limit]


def edit(content, t):
    """Turn t's edit of a file: odd turns change a line, even ones add a line after it. The same
    function gives both servers the same edit."""
    lines = content.split("\n")
    cand = [i for i, l in enumerate(lines) if l.strip() and not l.lstrip().startswith(("#", "//", "/*", "*"))]
    i = cand[(5 + 7 * t) % len(cand)]
    if t % 2:
        lines[i] = lines[i] + f"  // checked for empty input (turn {t})"
        what = "changed"
    else:
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines.insert(i + 1, f"{indent}// TODO(turn {t}): handle the empty input here")
        what = "added a line after"
        i += 1
    return "\n".join(lines), f"{what} line {i + 1}"


def files_message(files):
    parts = [f"File {p}:\n```cpp\n{c}\n```" for p, c in files.items()]
    return "Here are the files I am working on.\n\n" + "\n\n".join(parts)


def question(t, path, what):
    return (f"I just edited {path} ({what}). Question {t}: what could break after this change, and "
            f"which callers should I check?")


# ---- the servers ----

class Server:
    def __init__(self, kind, args, workdir):
        self.kind = kind
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.log = os.path.join(workdir, f"{kind}.log")
        if kind == "modeld":
            tok = os.path.join(workdir, "token")
            with open(tok, "w") as f:
                f.write(self.token + "\n")
            os.chmod(tok, 0o600)
            self.socket = os.path.join(workdir, "sock")
            cmd = [args.modeld, "serve", "--socket", self.socket, "--port", str(self.port), "--token-file", tok,
                   "--model", args.model, "--ctx-size", str(args.ctx), "--threads", str(args.threads),
                   "--flash-attn", args.flash_attn, "--chat-template-file", args.template, "--quiet"]
            # --modeld-files messages: the files in the messages, as llama-server gets them, with
            # edit-aware re-sent content (the opt-in); watch: the files in the workspace.
            self.model_id = "ws:" + WORKSPACE + (":edit_aware" if args.modeld_files == "messages" else "")
        else:
            cmd = [args.llama_server, "-m", args.model, "--port", str(self.port), "--api-key", self.token,
                   "-c", str(args.ctx), "-np", "1", "-t", str(args.threads), "-tb", str(args.threads),
                   "--flash-attn", args.flash_attn, "--jinja", "--chat-template-file", args.template,
                   "--no-webui", "-a", "bench"]
            self.model_id = "bench"
        self.cmd = cmd
        self.proc = start(cmd, self.log)
        deadline = time.time() + args.wait_s
        while True:
            self.check_alive()
            try:
                if self.get("/v1/models", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"{kind} did not answer GET /v1/models within {args.wait_s} s; log {self.log}:\n"
                                 + tail(self.log))
            time.sleep(0.2)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.kind} exited with {self.proc.returncode}; log {self.log}:\n" + tail(self.log))

    def get(self, path, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + self.token})
            res = conn.getresponse()
            body = res.read()
            return res.status, body
        finally:
            conn.close()

    def post_json(self, path, obj):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("POST", path, body=json.dumps(obj),
                         headers={"Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
            res = conn.getresponse()
            body = res.read()
        finally:
            conn.close()
        if res.status != 200:
            raise SystemExit(f"{self.kind}: POST {path}: HTTP {res.status}: {body[:500]!r}")
        return json.loads(body)

    def get_json(self, path):
        status, body = self.get(path)
        if status != 200:
            raise SystemExit(f"{self.kind}: GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def ws_session(self):
        for s in self.get_json("/v1/sessions")["sessions"]:
            if s.get("workspace") == WORKSPACE:
                return s
        return None

    def ws_stats(self):
        st = self.get_json(f"/v1/workspaces/{WORKSPACE}")
        st.pop("file_list", None)
        return st

    def prefilled_total(self):
        """The daemon's count of prompt tokens evaluated, all sessions and kinds of work: requests,
        the eager prefills of saved edits, background compactions (counted when they finish)."""
        status, body = self.get("/metrics")
        if status != 200:
            raise SystemExit(f"modeld: GET /metrics: HTTP {status}: {body[:300]!r}")
        for line in body.decode().splitlines():
            if line.startswith("modeld_tokens_prefilled_total "):
                return int(float(line.split()[1]))
        raise SystemExit("modeld: GET /metrics has no modeld_tokens_prefilled_total")

    def chat(self, messages, max_tokens, timeout):
        """One streamed request; returns the reply and t_send/t_first (time.perf_counter())."""
        try:
            r = stream_chat(self.port, self.token, self.model_id, messages, max_tokens, timeout, self.kind)
        except OSError as e:
            self.check_alive()
            raise SystemExit(f"{self.kind}: request failed: {e}")
        usage, timings = r["usage"], r["timings"]
        if usage is None or timings is None:
            raise SystemExit(f"{self.kind}: the stream had no {'usage' if usage is None else 'timings'}")
        return {"text": r["text"], "t_send": r["t_send"], "t_first": r["t_first"] if r["t_first"] is not None
                else r["t_end"], "no_content": r["t_first"] is None, "total_s": r["t_end"] - r["t_send"],
                "prompt_tokens": usage.get("prompt_tokens"),
                "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
                "prefilled": timings.get("prompt_n"), "prompt_ms": timings.get("prompt_ms")}


def start_watcher(args, server, srcdir, workdir, n_files):
    logpath = os.path.join(workdir, "watch.log")
    # The whole of the files must be in the context: a token budget of the context itself (the
    # default, half of it, would leave files out at small --ctx).
    cmd = [args.modeld, "ws", "watch", "--socket", server.socket, srcdir, "--workspace", WORKSPACE,
           "--ctx", str(args.ctx), "--budget-tokens", str(args.ctx)]
    proc = start(cmd, logpath)
    # State, not sleep: every file in the workspace, and its eager prefill done (the session's
    # prefix is the whole assembled context and it is idle).
    deadline = time.time() + args.wait_s
    seen = None
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"modeld ws watch exited with {proc.returncode}; log {logpath}:\n" + tail(logpath))
        server.check_alive()
        status, body = server.get(f"/v1/workspaces/{WORKSPACE}")
        if status == 200:
            st = json.loads(body)
            sess = server.ws_session()
            seen = {"files": st["files"], "context_tokens": st["context_tokens"],
                    "session": None if sess is None else {k: sess[k] for k in ("prefix_tokens", "busy")}}
            if (st["files"] == n_files and sess is not None and not sess["busy"]
                    and sess["prefix_tokens"] == st["context_tokens"]):
                return proc, st
        if time.time() > deadline:
            raise SystemExit(f"the workspace did not reach {n_files} files prefilled within {args.wait_s} s "
                             f"(last seen: {seen}); watcher log {logpath}:\n" + tail(logpath))
        time.sleep(0.1)


# ---- the loop ----

def run(kinds, args, workdir):
    srcdir = os.path.join(workdir, "proj")
    chosen = SOURCES[:args.files]
    files = {p: truncated(p, args.file_bytes) for p in chosen}
    for p, c in files.items():
        os.makedirs(os.path.dirname(os.path.join(srcdir, p)), exist_ok=True)
        with open(os.path.join(srcdir, p), "w", encoding="utf-8") as f:
            f.write(c)
    view = {k: dict(files) for k in kinds}  # each server's files as it last saw them saved
    servers = {}
    for k in kinds:
        servers[k] = Server(k, args, workdir)
        log(f"  {k} up on port {servers[k].port}")
    ws_stats = None
    last_total = 0
    if "modeld" in servers and args.modeld_files == "watch":
        _, ws_stats = start_watcher(args, servers["modeld"], srcdir, workdir, len(files))
        log(f"  workspace {WORKSPACE}: {ws_stats['files']} files, {ws_stats['context_tokens']} context tokens, "
            f"prefilled")
    elif "modeld" in servers:  # an empty workspace: the conversation brings the files
        model = os.path.splitext(os.path.basename(args.model))[0]
        servers["modeld"].post_json("/v1/sessions", {"workspace": WORKSPACE, "model": model,
                                                     "config": {"n_ctx": args.ctx}})
    convs = {k: [] for k in kinds}  # the conversation: user questions and the server's own answers
    rows = []
    for t in range(args.turns):
        order = kinds if t % 2 == 0 else list(reversed(kinds))
        path = chosen[t % len(chosen)]
        row = {"turn": t, "file": path}
        for kind in order:
            s = servers[kind]
            if kind == "modeld":
                before, st0 = s.prefilled_total(), s.ws_stats()
            new, what = edit(view[kind][path], t)
            row["edit"] = what
            q = question(t, path, what)
            # The save: on disk for modeld (the watcher sees it), into the first message for llama-server.
            if kind == "modeld" and args.modeld_files == "watch":
                tmp = os.path.join(srcdir, path + ".tmp~")
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(new)
                os.replace(tmp, os.path.join(srcdir, path))  # an editor's atomic save
            t_save = time.perf_counter()
            view[kind][path] = new
            time.sleep(args.save_lead_ms / 1000)
            convs[kind].append({"role": "user", "content": q})
            msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
            if kind == "llama-server" or args.modeld_files == "messages":
                msgs.append({"role": "user", "content": files_message(view[kind])})
            r = s.chat(msgs + convs[kind], args.decode, args.request_timeout_s)
            convs[kind].append({"role": "assistant", "content": r.pop("text")})
            r["lead_s"] = r["t_send"] - t_save
            r["ttft_s"] = r["t_first"] - r["t_send"]
            r["ttft_save_s"] = r["t_first"] - t_save
            r["prefilled_total"] = r["prefilled"]
            if kind == "modeld":
                after, st1 = s.prefilled_total(), s.ws_stats()
                last_total = after
                r["prefilled_total"] = after - before
                r["prefilled_other"] = r["prefilled_total"] - r["prefilled"]
                r["notes"] = st1["notes"]
                r["compactions"] = st1["compactions"] - st0["compactions"]
                r["compacting_after"] = st1["compacting"]
            for k in ("t_send", "t_first"):
                del r[k]
            row[kind] = r
            extra = ""
            if kind == "modeld":
                extra = f" (+{r['prefilled_other']} eager/compaction)"
                if r["compactions"] or r["compacting_after"]:
                    extra += f" [compactions {r['compactions']}{', one under way' if r['compacting_after'] else ''}]"
            log(f"  {kind:12s} turn {t}: prompt {r['prompt_tokens']:5d}  prefilled {r['prefilled']:5d}{extra}  "
                f"ttft {1000 * r['ttft_s']:8.1f} ms  from save {1000 * r['ttft_save_s']:8.1f} ms")
        rows.append(row)
    after_last = None
    if "modeld" in servers and rows:
        # A background compaction still under way: wait for it and count what it prefilled.
        s = servers["modeld"]
        deadline = time.time() + args.wait_s
        while s.ws_stats()["compacting"]:
            if time.time() > deadline:
                raise SystemExit(f"a background compaction was still under way {args.wait_s} s after the last turn")
            time.sleep(0.2)
        after_last = s.prefilled_total() - last_total
    if "modeld" in servers:
        ws_stats = servers["modeld"].ws_stats()
    rss = {k: peak_rss_mib(s.proc.pid) for k, s in servers.items()}
    return {"servers": {k: {"command": s.cmd, "peak_rss_mib": rss[k]} for k, s in servers.items()},
            "files": {p: len(c) for p, c in files.items()}, "workspace_at_end": ws_stats,
            "modeld_prefilled_after_last_turn": after_last, "turns": rows}


# ---- the summary ----

def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(x):
    return "-" if x is None else f"{x:.3f}x"


def summarize(res, kinds, args):
    both = len(kinds) == 2
    lines = []
    hdr = f"{'turn':4s} {'edit':30s} |"
    for k in kinds:
        if k == "modeld":
            hdr += f" {'modeld prefilled req+other=all':>30s} {'ttft_q':>8s} {'ttft_save':>9s} |"
        else:
            hdr += f" {k + ' prefilled':>22s} {'ttft_q':>8s} {'ttft_save':>9s} |"
    if both:
        hdr += "  tokens  ttft_q  ttft_save  (modeld / llama-server)"
    lines.append(hdr)
    for row in res["turns"]:
        name = os.path.basename(row["file"]) + " " + row["edit"].replace("added a line after", "add after").replace(
            "changed", "change")
        line = f"{row['turn']:<4d} {name[-30:]:30s} |"
        for k in kinds:
            r = row[k]
            if k == "modeld":
                pf = f"{r['prefilled']}+{r['prefilled_other']}={r['prefilled_total']}"
                if r["compactions"]:
                    pf = "(compaction) " + pf
                line += f" {pf:>30s}"
            else:
                line += f" {r['prefilled']:>22d}"
            line += f" {1000 * r['ttft_s']:6.0f}ms {1000 * r['ttft_save_s']:7.0f}ms |"
        if both:
            m, l = row["modeld"], row["llama-server"]
            line += (f"  {fmt_ratio(ratio(m['prefilled_total'], l['prefilled'])):>6s}"
                     f"  {fmt_ratio(ratio(m['ttft_s'], l['ttft_s'])):>6s}"
                     f"  {fmt_ratio(ratio(m['ttft_save_s'], l['ttft_save_s'])):>9s}")
        lines.append(line)
    lines.append("(ms: time to first token from the question and from the save; modeld's prefilled: by the request "
                 "(timings.prompt_n) + by the daemon otherwise during the turn (the eager prefill of the saved edit, "
                 "background compactions) = all)")
    if res.get("modeld_prefilled_after_last_turn"):
        lines.append(f"modeld prefilled {res['modeld_prefilled_after_last_turn']} more tokens after the last turn "
                     "(a background compaction), counted in no turn")
    warm = [r for r in res["turns"] if r["turn"] >= 1]
    summary = {"warm_turns": len(warm)}
    if not warm:
        lines.append("no warm turns (turn >= 1): run with --turns 2 or more")
        return summary, lines
    med = {}
    for k in kinds:
        rs = [row[k] for row in warm]
        med[k] = {"prefilled": statistics.median(r["prefilled"] for r in rs),
                  "prefilled_total": statistics.median(r["prefilled_total"] for r in rs),
                  "ttft_ms": 1000 * statistics.median(r["ttft_s"] for r in rs),
                  "ttft_save_ms": 1000 * statistics.median(r["ttft_save_s"] for r in rs),
                  "lead_min_ms": 1000 * min(r["lead_s"] for r in rs),
                  "peak_rss_mib": res["servers"][k]["peak_rss_mib"]}
        lines.append(f"median over {len(warm)} warm turns, {k}: prefilled {med[k]['prefilled']:g}"
                     + (f" by the request, {med[k]['prefilled_total']:g} in all (eager prefill, compactions)"
                        if k == "modeld" else "")
                     + f"; ttft {med[k]['ttft_ms']:.1f} ms from the question, {med[k]['ttft_save_ms']:.1f} ms from "
                     f"the save; peak RSS {med[k]['peak_rss_mib'] or 0:.0f} MiB")
    summary["median"] = med
    if not both:
        lines.append("goals not evaluated: they compare with llama-server (--servers llama-server,modeld)")
        return summary, lines
    def per_turn(key_m, key_l):
        xs = [ratio(row["modeld"][key_m], row["llama-server"][key_l]) for row in warm]
        return [x for x in xs if x is not None] or [float("nan")]

    tok = per_turn("prefilled_total", "prefilled")
    tok_req = per_turn("prefilled", "prefilled")
    ttq = per_turn("ttft_s", "ttft_s")
    tts = per_turn("ttft_save_s", "ttft_save_s")
    tok_sum = ratio(sum(row["modeld"]["prefilled_total"] for row in warm),
                    sum(row["llama-server"]["prefilled"] for row in warm))
    rat = {"tokens_median": statistics.median(tok), "tokens_max": max(tok), "tokens_sum": tok_sum,
           "tokens_request_only_median": statistics.median(tok_req),
           "ttft_question_median": statistics.median(ttq), "ttft_question_max": max(ttq),
           "ttft_save_median": statistics.median(tts), "ttft_save_max": max(tts)}
    summary["ratios_modeld_over_llama_server"] = rat
    lead_ok = med["modeld"]["lead_min_ms"] >= 1000
    goals = {"tokens": rat["tokens_median"] <= GOAL_TOKENS,
             "tokens_every_turn": rat["tokens_max"] <= GOAL_TOKENS,
             "ttft_question": rat["ttft_question_median"] <= GOAL_TTFT,
             "ttft_question_every_turn": rat["ttft_question_max"] <= GOAL_TTFT,
             "save_lead_at_least_1s": lead_ok}
    summary["goals"] = goals

    def verdict(median_ok, every_ok):
        return ("MET" if median_ok else "NOT MET") + (" (every turn)" if every_ok else " (not on every turn)")

    lines.append(f"modeld / llama-server over warm turns: tokens prefilled median {rat['tokens_median']:.3f}x "
                 f"(worst {rat['tokens_max']:.3f}x, all warm turns summed {rat['tokens_sum']:.3f}x; the request alone "
                 f"{rat['tokens_request_only_median']:.3f}x), "
                 f"ttft from the question median {rat['ttft_question_median']:.3f}x (worst "
                 f"{rat['ttft_question_max']:.3f}x), from the save median {rat['ttft_save_median']:.3f}x")
    lines.append(f"goal tokens <= {GOAL_TOKENS}x llama-server's (modeld's eager prefill and compactions "
                 "included): "
                 f"{verdict(goals['tokens'], goals['tokens_every_turn'])}")
    lines.append(f"goal ttft from the question <= {GOAL_TTFT}x llama-server's, save >= 1 s before: "
                 + (verdict(goals["ttft_question"], goals["ttft_question_every_turn"]) if lead_ok else
                    f"NOT EVALUATED (the shortest lead from save to question was "
                    f"{med['modeld']['lead_min_ms']:.0f} ms; use --save-lead-ms 1000 or more)"))
    return summary, lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeld", default=os.path.join(ROOT, "build/bin/modeld"))
    ap.add_argument("--llama-server", default=os.path.join(ROOT, "build-bench/llama.cpp/bin/llama-server"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--template", default=os.path.join(
        ROOT, "third_party/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"))
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=8192, help="n_ctx of both (the workspace's and llama-server's -c)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", choices=["on", "off"], default="off")
    ap.add_argument("--save-lead-ms", type=int, default=1000, help="from the save to the question (default 1000)")
    ap.add_argument("--files", type=int, default=5, help=f"how many of {len(SOURCES)} source files (default 5)")
    ap.add_argument("--file-bytes", type=int, default=2600, help="each file cut at a line boundary (default 2600)")
    ap.add_argument("--servers", default="llama-server,modeld", help="llama-server,modeld, or one of them")
    ap.add_argument("--modeld-files", choices=["watch", "messages"], default="watch",
                    help="watch: `modeld ws watch` keeps the files in the workspace (ws:bench); messages: the "
                         "files in the messages as llama-server gets them, on ws:bench:edit_aware (the opt-in)")
    ap.add_argument("--wait-s", type=int, default=600, help="deadline for a server to start and the workspace to sync")
    ap.add_argument("--request-timeout-s", type=int, default=1800, help="socket timeout of one request")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, files)")
    ap.add_argument("--out")
    args = ap.parse_args()
    kinds = [k for k in args.servers.split(",") if k]
    if not kinds or len(set(kinds)) != len(kinds) or any(k not in ("llama-server", "modeld") for k in kinds):
        ap.error("--servers: llama-server,modeld, or one of them")
    if not 1 <= args.files <= len(SOURCES):
        ap.error(f"--files: 1 to {len(SOURCES)}")
    for k, exe in (("modeld", args.modeld), ("llama-server", args.llama_server)):
        if k in kinds and not os.access(exe, os.X_OK):
            ap.error(f"{exe}: not an executable ({'--' + k})")
    # Ctrl-C (even where the shell started this with SIGINT ignored) and SIGTERM end the run through
    # the finally below, which stops every process it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="ws-loop-")
    log(f"work dir {workdir}; load before: {open('/proc/loadavg').read().split()[:3]}")
    ok = False
    try:
        res = run(kinds, args, workdir)
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            log(f"logs kept in {workdir}")
    log(f"load after: {open('/proc/loadavg').read().split()[:3]}")
    summary, lines = summarize(res, kinds, args)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "summary": summary, **res}, f, indent=2)


if __name__ == "__main__":
    main()
