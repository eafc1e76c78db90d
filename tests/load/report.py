#!/usr/bin/env python3
"""Turns run.sh's results.tsv into the Markdown tables of tests/load/README.md.

Rows of results.tsv (tab-separated):
  <phase> <target> <round> <requests> <duration_us> <p50_us> <p99_us> <fresh_tokens> <steal_pct> [<cpu_us_per_request>|-]
  rss <label> <VmHWM_kib> <VmRSS_kib>
  idle <server> opened=… rss_before_kib=… rss_idle_kib=… hwm_kib=… server_fds_at_sample=… open_after_hold=…
  instr <target> <connections> <requests> <instructions>
  sys <target> <requests> <syscalls>
Medians are taken over rounds; each round is one fixed-duration wrk run.
"""
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(list)
    by_round = {}
    rss, idle, instr, syscalls = [], [], [], []
    cpu = defaultdict(list)
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if f[0] == "rss":
            rss.append((f[1], int(f[2]), int(f[3])))
        elif f[0] == "idle":
            idle.append((f[1], dict(kv.split("=") for kv in f[2].split())))
        elif f[0] == "sys":
            syscalls.append((f[1], int(f[2]), int(f[3])))
        elif f[0] == "instr":
            instr.append((f[1], int(f[2]), int(f[3]), int(f[4])))
        else:
            phase, target, rnd, reqs, dur, p50, p99, fresh, steal = f[:9]
            if len(f) > 9 and f[9] != "-":
                cpu[(phase, target)].append(float(f[9]))
            by_round[(phase, target, rnd)] = (int(reqs) / (int(dur) / 1e6), float(p99))
            runs[(phase, target)].append(
                (int(reqs) / (int(dur) / 1e6), float(p50), float(p99), int(fresh), int(reqs), float(steal))
            )

    phases = []
    for phase, _ in runs:
        if phase not in phases:
            phases.append(phase)
    for phase in phases:
        med = {
            t: (
                statistics.median(r[0] for r in rs),
                statistics.median(r[1] for r in rs),
                statistics.median(r[2] for r in rs),
                min(r[0] for r in rs),
                max(r[0] for r in rs),
                len(rs),
                sum(r[3] for r in rs),
                sum(r[4] for r in rs),
                statistics.median(r[5] for r in rs),
            )
            for (p, t), rs in runs.items()
            if p == phase
        }
        base = next((t for t in med if t.startswith("direct")), None)
        ngx = next((t for t in med if t.startswith("nginx")), None)
        print(f"\n### {phase}\n")
        print("| target | req/s (median) | req/s range | p50 µs | p99 µs | rps vs direct | rps vs nginx | p50 − direct µs | p99 vs nginx | steal % |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t, (rps, p50, p99, lo, hi, n, fresh, reqs, steal) in med.items():
            vs_d = f"{rps / med[base][0]:.2f}×" if base else "–"
            vs_n = f"{rps / med[ngx][0]:.2f}×" if ngx else "–"
            add = f"{p50 - med[base][1]:+.0f}" if base else "–"
            p99n = f"{p99 / med[ngx][2]:.2f}×" if ngx else "–"
            name = t + (f" ({fresh} fresh tokens of {reqs} requests)" if fresh else "")
            print(f"| {name} | {rps:,.0f} | {lo:,.0f}–{hi:,.0f} ({n} rounds) | {p50:.0f} | {p99:.0f} | {vs_d} | {vs_n} | {add} | {p99n} | {steal:.1f} |")

    if cpu:
        print("\n### mcpgate CPU time per request (user + system, /proc/PID/stat)\n")
        print("| phase | target | µs/request (median) | range | rounds |")
        print("|---|---|---:|---:|---:|")
        for (phase, target), us in cpu.items():
            print(f"| {phase} | {target} | {statistics.median(us):.2f} | {min(us):.2f}–{max(us):.2f} | {len(us)} |")

    for phase in phases:
        if phase.startswith("interleaved"):
            pairwise(phase, {k[1:]: v for k, v in by_round.items() if k[0] == phase})

    if rss:
        print("\n### mcpgate memory\n")
        print("| when | VmHWM (peak RSS) MiB | VmRSS MiB |")
        print("|---|---:|---:|")
        for label, hwm, cur in rss:
            print(f"| {label} | {hwm / 1024:.1f} | {cur / 1024:.1f} |")
    if idle:
        print("\n### idle keep-alive connections (fresh server, one request per connection, then idle)\n")
        print("| server | connections | server fds at sample | parked at sample | RSS before MiB | RSS with all idle MiB | per connection KiB | RSS after hold MiB | still open after hold |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for server, d in idle:
            n = int(d["opened"])
            before, during = int(d["rss_before_kib"]), int(d["rss_idle_kib"])
            after = f"{int(d['rss_after_hold_kib']) / 1024:.1f}" if "rss_after_hold_kib" in d else "–"
            print(f"| {server} | {n} | {d.get('server_fds_at_sample', '?')} | {d.get('parked_at_sample', '–')} | "
                  f"{before / 1024:.1f} | {during / 1024:.1f} | {(during - before) / n:.1f} | {after} | {d['open_after_hold']} |")
    if instr:
        print("\n### instructions per request (callgrind, user space, whole process)\n")
        print("| connections | nginx proxy | mcpgate | ratio |")
        print("|---:|---:|---:|---:|")
        by = {(t, c): total / n for t, c, n, total in instr}
        for c in sorted({c for _, c, _, _ in instr}):
            ng, gw = by.get(("nginx", c)), by.get(("mcpgate", c))
            if ng and gw:
                print(f"| {c} | {ng:,.0f} | {gw:,.0f} | {gw / ng:.2f}× |")
    if syscalls:
        print("\n### system calls per request (strace -c -f, 16 connections)\n")
        print("| target | syscalls/request |")
        print("|---|---:|")
        for t, n, calls in syscalls:
            print(f"| {t} | {calls / n:.2f} |")


def pairwise(phase, rounds):
    """Per-round ratios to the nginx round just before (run.sh interleaved), and with COMPARE_BIN,
    of the compared build to the main one in the same round."""
    rows = []
    for target, base_name in (("mcpgate", "nginx"), ("mcpgate-compare", "nginx"), ("mcpgate-compare", "mcpgate")):
        rps, p99 = [], []
        for (t, rnd), (r, p) in sorted(rounds.items()):
            base = rounds.get((base_name, rnd))
            if t == target and base:
                rps.append(r / base[0])
                p99.append(p / base[1])
        if rps:
            rows.append((f"{target} / {base_name}", rps, p99))
    if not rows:
        return
    print(f"\n### {phase}: ratios round by round\n")
    print("| ratio | rounds | req/s ratio (median) | range | p99 ratio (median) | range |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rps, p99 in rows:
        print(f"| {name} | {len(rps)} | {statistics.median(rps):.2f}× | {min(rps):.2f}–{max(rps):.2f}× | "
              f"{statistics.median(p99):.2f}× | {min(p99):.2f}–{max(p99):.2f}× |")


if __name__ == "__main__":
    main(sys.argv[1])
