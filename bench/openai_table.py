#!/usr/bin/env python3
"""Prints the markdown table of docs/BENCHMARKS.md from bench/openai_loop.py's JSON files.

  python3 bench/openai_table.py build-bench/openai-*.json
"""
import json
import sys


def main():
    print("| run | server | attention | prefilled, first turns | prefilled, later turns | max turn prefilled over llama-server's "
          "| TTFT first turns | TTFT later turns | peak RSS |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in sys.argv[1:]:
        d = json.load(open(path))
        a = d["args"]
        by = {r["server"]: r for r in d["results"]}
        base = {(t["conversation"], t["turn"]): t["prefilled"] for t in by.get("llama-server", {"turns": []})["turns"]}
        for server, r in by.items():
            s = d["summary"][server]
            over = max((t["prefilled"] - base.get((t["conversation"], t["turn"]), t["prefilled"]) for t in r["turns"]),
                       default=0)
            print(f"| {a['conversations']} conv x {a['turns']} turns | {server} | {'flash' if a['flash_attn'] == 'on' else 'no flash'} "
                  f"| {s['prefilled_cold']} | {s['prefilled_warm']} | {over if server != 'llama-server' else '-'} "
                  f"| {s['ttft_cold_ms'] / 1000:.1f} s | {s['ttft_warm_ms'] / 1000:.2f} s | {s['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
