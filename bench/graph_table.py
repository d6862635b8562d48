#!/usr/bin/env python3
"""Graph index vs hnswlib from recall-runner rows: QPS at recall targets, build, memory.

    python3 bench/graph_table.py NAME ROWS GYRE.jsonl HNSW.csv [NAME ROWS GYRE.jsonl HNSW.csv ...]

GYRE.jsonl: `gyre-bench recall --index graph --json` rows (single mode); HNSW.csv:
`bench/baselines/run_baselines.py --only hnswlib` rows. QPS at a target recall is interpolated
linearly in log(QPS) between the two sweep points around the target (— when the sweep does
not reach it). Prints one Markdown table.
"""
import csv, json, math, sys


def at(points, target):
    pts = sorted(points)  # (recall, qps)
    best = None
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= target <= r1 and r1 > r0:
            t = (target - r0) / (r1 - r0)
            q = math.exp(math.log(q0) + t * (math.log(q1) - math.log(q0)))
            best = q if best is None else max(best, q)
    # Any point already past the target counts as it is (the fastest such).
    for r, q in pts:
        if r >= target:
            best = q if best is None else max(best, q)
    return best


def fmt(q):
    return "—" if q is None else f"{q:,.0f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}×"


rows = ["| data | index | build s (1 thread) | bytes/vector | QPS @0.95 | QPS @0.99 | max recall | ratio @0.95 | ratio @0.99 |",
        "|---|---|---|---|---|---|---|---|---|"]
args = sys.argv[1:]
if not args or len(args) % 4:
    sys.exit("usage: bench/graph_table.py NAME ROWS GYRE.jsonl HNSW.csv [NAME ROWS GYRE.jsonl HNSW.csv ...]")
for i in range(0, len(args), 4):
    name, n, gj, hc = args[i:i + 4]
    n = int(n)
    g = [json.loads(l) for l in open(gj) if l.strip()]
    g = [r for r in g if r.get("index") == "graph" and r["mode"] == "single" and r["threads"] == 1]
    h = [r for r in csv.DictReader(open(hc)) if r["mode"] == "single" and r["threads"] == "1"]
    gp = [(r["recall"], r["qps"]) for r in g]
    hp = [(float(r["recall"]), float(r["qps"])) for r in h]
    g95, g99, h95, h99 = at(gp, .95), at(gp, .99), at(hp, .95), at(hp, .99)
    gb = g[0]["resident_bytes_per_vector"] if g else None
    hb = float(h[0]["index_bytes"]) / n
    rows.append(f"| {name} | gyre graph | {g[0]['build_s']:.1f} | {gb:.0f} (graph, records, ids) | {fmt(g95)} | {fmt(g99)} | {max(p[0] for p in gp):.4f} | {ratio(g95, h95)} | {ratio(g99, h99)} |")
    rows.append(f"| {name} | hnswlib M=16 efC=100 | {float(h[0]['build_s']):.1f} | {hb:.0f} (index) | {fmt(h95)} | {fmt(h99)} | {max(p[0] for p in hp):.4f} | | |")
print("\n".join(rows))
