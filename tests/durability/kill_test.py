#!/usr/bin/env python3
"""SIGKILL of the daemon at random points while it writes snapshots (docs/snapshot.md).

Each round starts `modeld serve` on one snapshot directory, changes a workspace (puts that each
make a new version of its files; an idle time of 0 writes a snapshot after every change) and kills
the daemon with SIGKILL after a random delay. The next round's daemon must then find the
workspace either cold (no snapshot was complete yet) or whole at a version it was sent: every file
at one consistent version, never older than the last round's, the context holding them, no
snapshot refused as corrupt, no temporary file left, an ask that works.

usage: kill_test.py MODELD_BIN WORKDIR [ROUNDS]   (ROUNDS default 200)
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("modeld", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


def call(sock, method, path, body=None):
    c = UnixConnection(sock)
    try:
        c.request(method, path, None if body is None else json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def wait_up(sock, proc):
    """Waits on the daemon's state: its socket answers, or it exited (a failure)."""
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: the daemon exited with {proc.returncode} before answering")
        try:
            if call(sock, "GET", "/v1/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)


FILES = ["src/a.cc", "src/b.cc"]


def content(path, version):
    # Its size tells the version (it grows with it), so the restored file list says which
    # version each file is at.
    return "".join(f"// {path} version {version} line {i}\n" for i in range(8)) + "v" * version + "\n"


def main():
    modeld, work = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model = os.path.join(work, "kill-tiny.gguf")
    subprocess.run([modeld, "make-model", "--preset", "tiny", "--out", model], check=True, stdout=subprocess.DEVNULL)
    sock = os.path.join(work, "s.sock")
    snaps = os.path.join(work, "snaps")
    rng = random.Random(int(os.environ.get("KILL_SEED", "7")))
    version, last_seen, cold, restored = 0, 0, 0, 0
    for r in range(rounds):
        log_path = os.path.join(work, "daemon.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([modeld, "serve", "--socket", sock, "--model", model, "--threads", "1",
                                     "--snapshot-dir", snaps, "--snapshot-idle-s", "0"],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_up(sock, proc)
            leftovers = [f for f in os.listdir(snaps) if not f.endswith(".snap")]
            if leftovers:
                raise SystemExit(f"FAIL round {r}: temporary files survived the restart: {leftovers}")
            st, body = call(sock, "GET", "/v1/workspaces/w")  # restores it, or 404 when cold
            if st == 200:
                restored += 1
                st, ctx = call(sock, "GET", "/v1/workspaces/w/context")
                if st != 200:
                    raise SystemExit(f"FAIL round {r}: context {st} {ctx[:200]}")
                sizes = {len(content(p, v).encode()): v for p in FILES[:1] for v in range(1, version + 1)}
                files = {f["path"]: f["bytes"] for f in json.loads(body)["file_list"]}
                got = {p: sizes.get(files[p], -1) if p in files else 0 for p in FILES}
                if -1 in got.values():
                    raise SystemExit(f"FAIL round {r}: a restored file is of no version sent: {files}")
                if got[FILES[0]] == 0 and last_seen:
                    raise SystemExit(f"FAIL round {r}: the restored workspace lacks the files it had: {files}")
                if got[FILES[0]] - got[FILES[1]] not in (0, 1):  # b is put right after a
                    raise SystemExit(f"FAIL round {r}: the files are of versions no snapshot had: {got}")
                if got[FILES[1]] < last_seen:
                    raise SystemExit(f"FAIL round {r}: restored version {got} is older than {last_seen}")
                for p in FILES:  # the context holds the file as restored (its newest version's text)
                    if got[p] and content(p, got[p]).splitlines()[0] not in json.loads(ctx)["text"]:
                        raise SystemExit(f"FAIL round {r}: the context lacks {p} at version {got[p]}")
                last_seen = got[FILES[1]]
            elif st == 404:
                if last_seen:
                    raise SystemExit(f"FAIL round {r}: a workspace restored before (version {last_seen}) is gone")
                cold += 1
                st, b = call(sock, "POST", "/v1/sessions", {"workspace": "w", "config": {"n_ctx": 2048}})
                if st != 200:
                    raise SystemExit(f"FAIL round {r}: open {st} {b[:200]}")
            else:
                raise SystemExit(f"FAIL round {r}: GET workspace {st} {body[:200]}")
            with open(log_path) as f:
                if "not restored" in f.read():
                    raise SystemExit(f"FAIL round {r}: a snapshot was refused:\n" + open(log_path).read()[-2000:])
            if r % 10 == 0:
                st, b = call(sock, "POST", "/v1/workspaces/w/ask", {"question": "ok?", "max_tokens": 2})
                if st != 200 or '"done"' not in b:
                    raise SystemExit(f"FAIL round {r}: ask {st} {b[-300:]}")
            # Bursts of changes with pauses between them, as an editor sends them: the daemon
            # writes a snapshot once the workspace is idle after a change (--snapshot-idle-s 0),
            # so writes happen in the pauses; the kill comes at a random point of the last pause
            # (before, during or after the write).
            for burst in range(rng.randint(1, 3)):
                for _ in range(rng.randint(1, 3)):
                    version += 1
                    for p in FILES:
                        st, b = call(sock, "POST", "/v1/workspaces/w/files",
                                     {"path": p, "content": content(p, version)})
                        if st != 200:
                            raise SystemExit(f"FAIL round {r}: put {st} {b[:200]}")
                time.sleep(rng.uniform(0.0, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    print(f"kill_test: {rounds} rounds, {restored} restored, {cold} cold, last version restored {last_seen} "
          f"of {version} sent")
    if restored < rounds // 2:
        raise SystemExit("FAIL: fewer than half the rounds restored a snapshot: the kill points never found one")


if __name__ == "__main__":
    main()
