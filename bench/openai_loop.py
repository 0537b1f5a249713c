#!/usr/bin/env python3
"""The coding loop through OpenAI's /v1/chat/completions, on modeld and on llama-server side by side.

Each conversation is what an OpenAI-speaking coding tool sends: a long system prompt, a first user
message with a few source files, then turns that each append the model's answer and a new user
message (an edit described, a question). Every request is streamed with include_usage, greedy,
16 tokens. Both servers get the same model, the same chat template file, the same threads, the same
messages (each its own answers sent back, as a tool does) and the same attention path.

Per turn it records the prompt tokens, the tokens prefilled (the reply's `timings.prompt_n`, which
both servers report), the time to the first streamed token at the client, and at the end the
server's peak RSS (VmHWM). Conversations are interleaved turn by turn; both servers run at once,
each request going to one and then to the other, the first alternating turn by turn.

  python3 bench/openai_loop.py --modeld build/bin/modeld \\
      --llama-server build-bench/llama.cpp/bin/llama-server --model coder-0.5b.gguf \\
      --template third_party/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja \\
      --conversations 2 --turns 4 --flash-attn off --out build-bench/openai-2.json

Only the Python standard library is used.
"""
import argparse
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_source(rel, limit):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()[:limit]


SOURCES = [
    "src/core/text_stream.cpp", "src/core/manifest.cpp", "src/core/registry.cpp", "src/core/error.cpp",
    "src/core/compute_gate.cpp", "src/daemon/metrics.cpp", "src/core/service.cpp", "src/core/session.cpp",
]


def system_prompt():
    # A coding agent's system prompt: instructions and tool descriptions, ~1.5k tokens, the same for
    # every conversation (as one tool sends).
    rules = read_source("docs/context-assembly.md", 5000)
    return ("You are a coding agent working in the user's repository. Follow the rules below.\n\n" + rules)


def first_message(c):
    files = [SOURCES[(2 * c + i) % len(SOURCES)] for i in range(2)]
    parts = [f"File {p}:\n```cpp\n{read_source(p, 2500)}\n```" for p in files]
    return (f"Task {c}: here are the files I am working on.\n\n" + "\n\n".join(parts) +
            "\n\nWhat does the first file do?")


def turn_message(c, t):
    return (f"I edited {SOURCES[(2 * c + t) % len(SOURCES)]}: renamed a local variable in the second function "
            f"and added a check for an empty input. Question {t}: what could break after this change?")


class Server:
    def __init__(self, kind, args, n_conv, workdir):
        self.kind = kind
        self.port = free_port()
        self.token = secrets.token_hex(24)
        log = open(os.path.join(workdir, f"{kind}.log"), "w")
        fa = args.flash_attn
        if kind == "modeld":
            tok = os.path.join(workdir, "token")
            with open(tok, "w") as f:
                f.write(self.token + "\n")
            os.chmod(tok, 0o600)
            cmd = [args.modeld, "serve", "--socket", os.path.join(workdir, "sock"), "--port", str(self.port),
                   "--token-file", tok, "--model", args.model, "--ctx-size", str(args.ctx), "--threads",
                   str(args.threads), "--flash-attn", fa, "--chat-template-file", args.template, "--quiet"]
        else:
            # One slot per conversation, each with the same context as modeld's conversations.
            cmd = [args.llama_server, "-m", args.model, "--port", str(self.port), "--api-key", self.token,
                   "-c", str(args.ctx * n_conv), "-np", str(n_conv), "-t", str(args.threads), "-tb",
                   str(args.threads), "--flash-attn", fa, "--jinja", "--chat-template-file", args.template,
                   "--no-webui", "-a", "bench"]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{kind} exited: see {log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v1/models", headers={"Authorization": "Bearer " + self.token})
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"{kind} did not come up")
        self.model_id = "bench" if kind == "llama-server" else os.path.splitext(os.path.basename(args.model))[0]

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def chat(self, messages, max_tokens):
        r = stream_chat(self.port, self.token, self.model_id, messages, max_tokens, 600, self.kind)
        total = r["t_end"] - r["t_send"]
        return {"text": r["text"], "ttft_s": r["t_first"] - r["t_send"] if r["t_first"] is not None else total,
                "total_s": total, "prompt_tokens": r["usage"]["prompt_tokens"] if r["usage"] else None,
                "cached_tokens": ((r["usage"] or {}).get("prompt_tokens_details") or {}).get("cached_tokens"),
                "prefilled": r["timings"].get("prompt_n") if r["timings"] else None,
                "prompt_ms": r["timings"].get("prompt_ms") if r["timings"] else None}


def stream_chat(port, token, model, messages, max_tokens, timeout, kind):
    """One streamed, greedy /v1/chat/completions with include_usage (bench/ws_loop.py uses it too).
    Returns the text, the last usage and timings seen, and time.perf_counter() at the send, the
    first content delta (None without one) and the end."""
    body = json.dumps({"model": model, "messages": messages, "stream": True,
                       "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
                       "temperature": 0, "seed": 1})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t_send = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        res = conn.getresponse()
        if res.status != 200:
            raise SystemExit(f"{kind}: HTTP {res.status}: {res.read()[:500]}")
        t_first = None
        text = ""
        usage = timings = None
        for raw in res:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue  # blank lines and keep-alive comments (": ...")
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise SystemExit(f"{kind}: {chunk['error']}")
            for ch in chunk.get("choices", []):
                piece = (ch.get("delta") or {}).get("content") or ""
                if piece and t_first is None:
                    t_first = time.perf_counter()
                text += piece
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
        return {"text": text, "usage": usage, "timings": timings, "t_send": t_send, "t_first": t_first,
                "t_end": time.perf_counter()}
    finally:
        conn.close()


def run(kinds, args, workdir):
    """Both servers up at once; each request goes to one, then the same to the other, the first of
    them alternating turn by turn, so drift over the run hits both alike."""
    servers = {k: Server(k, args, args.conversations, workdir) for k in kinds}
    convs = {k: [[{"role": "system", "content": system_prompt()}] for _ in range(args.conversations)] for k in kinds}
    rows = {k: [] for k in kinds}
    try:
        for t in range(args.turns):
            order = kinds if t % 2 == 0 else list(reversed(kinds))
            for c in range(args.conversations):
                for kind in order:
                    msgs = convs[kind][c]
                    msgs.append({"role": "user", "content": first_message(c) if t == 0 else turn_message(c, t)})
                    r = servers[kind].chat(msgs, args.decode)
                    msgs.append({"role": "assistant", "content": r["text"]})
                    r.update({"conversation": c, "turn": t})
                    del r["text"]
                    rows[kind].append(r)
                    print(f"  {kind:12s} conv {c} turn {t}: prompt {r['prompt_tokens']:5d}  prefilled "
                          f"{r['prefilled']:5d}  ttft {1000 * r['ttft_s']:8.1f} ms", file=sys.stderr)
        rss = {k: s.peak_rss_mib() for k, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    return [{"server": k, "command": servers[k].cmd, "peak_rss_mib": rss[k], "turns": rows[k]} for k in kinds]


def summary(res):
    warm = [r for r in res["turns"] if r["turn"] > 0]
    cold = [r for r in res["turns"] if r["turn"] == 0]
    return {"prefilled_warm": sum(r["prefilled"] for r in warm), "prefilled_cold": sum(r["prefilled"] for r in cold),
            "ttft_warm_ms": 1000 * statistics.mean(r["ttft_s"] for r in warm) if warm else 0,
            "ttft_cold_ms": 1000 * statistics.mean(r["ttft_s"] for r in cold) if cold else 0,
            "peak_rss_mib": res["peak_rss_mib"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeld", default=os.path.join(ROOT, "build/bin/modeld"))
    ap.add_argument("--llama-server", default=os.path.join(ROOT, "build-bench/llama.cpp/bin/llama-server"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--template", default=os.path.join(
        ROOT, "third_party/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"))
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", choices=["on", "off"], default="off")
    ap.add_argument("--servers", default="llama-server,modeld")
    ap.add_argument("--out")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="openai-loop-")
    print(f"load before: {open('/proc/loadavg').read().split()[:3]}", file=sys.stderr)
    results = run(args.servers.split(","), args, workdir)
    out = {"args": vars(args), "results": results, "summary": {r["server"]: summary(r) for r in results}}
    print(json.dumps(out["summary"], indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
