#!/usr/bin/env python3
"""How long a put takes while the workspace computes (issue #17: "a put answers within 50 ms
whatever runs in the background").

Starts `modeld serve` on --model, opens workspace `lat` and puts --files source files of this
repository; their eager prefill runs for many seconds on a CPU. While it runs, puts an edit every
--every-ms and times each reply; then the same while an ask prefills its question and decodes.
Prints per phase the median and max put time and how many puts came back while the workspace was
still computing (GET /v1/sessions: busy).

  python3 bench/put_latency.py --model ~/.cache/modeld/models/bench-coder-0.5b.gguf

Only the Python standard library is used.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ws_loop import ROOT, SOURCES, Server, stop_all, truncated  # noqa: E402

WS = "lat"


def timed_put(s, path, content):
    t0 = time.perf_counter()
    s.post_json(f"/v1/workspaces/{WS}/files", {"path": path, "content": content})
    return 1000 * (time.perf_counter() - t0)


def busy(s):
    return any(x.get("workspace") == WS and x.get("busy") for x in s.get_json("/v1/sessions")["sessions"])


def ask(s, question, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=1800)
    try:
        conn.request("POST", f"/v1/workspaces/{WS}/ask", body=json.dumps({"question": question, "max_tokens": max_tokens}),
                     headers={"Authorization": "Bearer " + s.token, "Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def phase(s, name, lines, n, every_ms):
    times, computing = [], 0
    for i in range(n):
        lines[i % len(lines)] = f"// edited {name} {i}"
        times.append(timed_put(s, "src/edited.cpp", "\n".join(lines) + "\n"))
        computing += busy(s)
        time.sleep(every_ms / 1000)
    print(f"{name:28s} puts {n:3d}  median {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms  "
          f"workspace still computing after {computing} of them", flush=True)
    return {"phase": name, "put_ms": times, "computing": computing}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modeld", default=os.path.join(ROOT, "build/bin/modeld"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--template", default=os.path.join(
        ROOT, "third_party/llama.cpp/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"))
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--puts", type=int, default=20)
    ap.add_argument("--every-ms", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()
    args.flash_attn, args.wait_s, args.modeld_files = "off", 600, "watch"  # what Server() reads
    workdir = tempfile.mkdtemp(prefix="put-latency-")
    results = []
    try:
        s = Server("modeld", args, workdir)
        model = os.path.splitext(os.path.basename(args.model))[0]
        s.post_json("/v1/sessions", {"workspace": WS, "model": model, "config": {"n_ctx": args.ctx}})
        files = {p: truncated(p, 4000) for p in SOURCES[:args.files]}
        edited = truncated(SOURCES[0], 1500).splitlines()
        s.post_json(f"/v1/workspaces/{WS}/files", {"path": "src/edited.cpp", "content": "\n".join(edited) + "\n",
                                                   "prefill": False})
        for i, (p, c) in enumerate(files.items()):  # the last put starts the eager prefill of them all
            s.post_json(f"/v1/workspaces/{WS}/files", {"path": p, "content": c, "prefill": i + 1 == len(files)})
        results.append(phase(s, "during the eager prefill", edited, args.puts, args.every_ms))
        while busy(s):
            time.sleep(0.2)
        t = threading.Thread(target=ask, args=(s, "Explain every file, one by one, in detail.", 256))
        t.start()
        while not busy(s):
            time.sleep(0.01)
        results.append(phase(s, "during an ask", edited, args.puts, args.every_ms))
        t.join()
        ctx = s.get_json(f"/v1/workspaces/{WS}")
        print(f"workspace at the end: {ctx['files']} files, {ctx['notes']} notes, {ctx['context_tokens']} tokens")
    finally:
        stop_all()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "phases": results}, f, indent=2)


if __name__ == "__main__":
    main()
