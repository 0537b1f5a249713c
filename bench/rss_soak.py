#!/usr/bin/env python3
"""RSS of a modeld daemon over many workspace turns with compactions (docs/BENCHMARKS.md).

Starts `modeld serve` on a private socket, opens one workspace, puts two files, then each turn
edits three lines of one file and asks (2 tokens); every 10 turns prints the turn, compactions,
compactions in place, context tokens, and the daemon's (VmRSS, VmHWM) in MiB.

  python3 bench/rss_soak.py --modeld build/bin/modeld \
      --model ~/.cache/modeld/models/default-tiny-2.gguf --n-ctx 4096 --turns 100
"""
import argparse, http.client, json, os, socket, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--modeld", default="build/bin/modeld")
ap.add_argument("--model", required=True)
ap.add_argument("--n-ctx", type=int, default=4096)
ap.add_argument("--turns", type=int, default=100)
args = ap.parse_args()
sock = os.path.join(tempfile.mkdtemp(prefix="modeld-soak-"), "m.sock")


class UConn(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=300)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock)


def req(method, path, body=None):
    c = UConn()
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    d = r.read().decode()
    c.close()
    return r.status, d


daemon = subprocess.Popen([args.modeld, "serve", "--socket", sock, "--model", args.model, "--threads", "2", "--quiet"])
try:
    for _ in range(300):
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    time.sleep(0.5)

    def rss():
        st = open(f"/proc/{daemon.pid}/status").read()
        g = lambda k: int([l for l in st.splitlines() if l.startswith(k)][0].split()[1]) // 1024
        return g("VmRSS"), g("VmHWM")

    assert req("POST", "/v1/sessions", {"workspace": "ws", "config": {"n_ctx": args.n_ctx}})[0] == 200
    lines = [f"int value_{i} = {i * 7};" for i in range(60)]
    req("POST", "/v1/workspaces/ws/files", {"path": "src/v.cc", "content": "\n".join(lines) + "\n"})
    req("POST", "/v1/workspaces/ws/files",
        {"path": "src/w.cc", "content": "\n".join(l.replace("value", "w") for l in lines) + "\n"})
    req("POST", "/v1/workspaces/ws/ask", {"question": "first", "max_tokens": 2})
    print("turn compactions in_place context (rss_mib, hwm_mib)")
    for t in range(args.turns):
        for k in range(3):
            i = (t * 3 + k) % 60
            lines[i] += f" // e{t}"
        req("POST", "/v1/workspaces/ws/files", {"path": "src/v.cc", "content": "\n".join(lines) + "\n"})
        req("POST", "/v1/workspaces/ws/ask", {"question": f"turn {t}", "max_tokens": 2})
        if t % 10 == 9:
            info = json.loads(req("GET", "/v1/workspaces/ws")[1])
            print(t, info["compactions"], info["compactions_in_place"], info["context_tokens"], rss(), flush=True)
finally:
    daemon.terminate()
    daemon.wait()
