#!/usr/bin/env python3
"""Gyre against turbovec and FAISS PQFastScan (+ RefineFlat), side by side, with ratios.

    bench/baselines/setup.sh                      # once: the reference libraries
    cargo build --release -p gyre-bench -p gyre-datasets
    bench/baselines/.venv/bin/python bench/compare.py            # every dataset
    bench/baselines/.venv/bin/python bench/compare.py --datasets docs --rounds 1 --queries 200

For every dataset it runs `gyre-bench recall` (codes only: 2 and 4 bits, plain and staged scans
with shortlists 2 to 64 (12 and 24 among them), oversampling 1/2/4; and rerank on f32 copies after a 4-bit scan, plain
or staged with shortlists 2 to 128, oversampling 1/2/4/8, of every candidate or of those
`target_recall = 0.99` keeps, for the >= 0.99 rows; 2-bit codes never won a rerank row, so the
rerank grid leaves them out) and
`bench/baselines/run_baselines.py --only turbovec,faiss-pqfastscan,faiss-pqfastscan-refine` in
the same process tree, `--rounds` times interleaved (each run reports the best of `--runs`
timings; the table quotes the median over rounds). For each peer point it picks Gyre's fastest
configuration in the same mode whose recall is at least the peer's minus 0.005 (codes only
against codes-only peers), and prints the ratio. Datasets:

* `docs`: the shared docs-minilm-384-angular set;
* `random768`, `random1536`: 100,000 random unit vectors and 1,000 random unit queries at d = 768
  and 1536 (numpy seed 768 / 1536), angular, exact ground truth by faiss IndexFlatIP; written
  once under `data/`;
* `glove50`: glove-50-angular via `gyre-datasets fetch glove-50` (needs the network once;
  skipped with a message otherwise). turbovec refuses d % 8 != 0, so its rows are absent there.

The table goes to stdout and to `results/<--out>.md`, the rows to `results/<--out>.csv`.
"""

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DOCS = os.path.join(ROOT, "..", "shared", "datasets", "docs-minilm-384-angular.hdf5")
DATA = os.path.join(ROOT, "data")
RESULTS = os.path.join(ROOT, "results")
PEERS = "turbovec,faiss-pqfastscan,faiss-pqfastscan-refine"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    keep = [x for x in flags if x.startswith(("avx", "sse4_2", "gfni", "vpclmul"))]
                    return " ".join(sorted(keep))
    except OSError:
        pass
    return platform.machine()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def random_dataset(dim, n=100_000, nq=1000):
    """Writes (once) an ann-benchmarks file of random unit vectors with exact ground truth."""
    path = os.path.join(DATA, f"random-{dim}-angular.hdf5")
    if os.path.exists(path):
        return path
    import faiss
    import h5py
    import numpy as np
    os.makedirs(DATA, exist_ok=True)
    rng = np.random.default_rng(dim)
    train = rng.standard_normal((n, dim), dtype=np.float32)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = rng.standard_normal((nq, dim), dtype=np.float32)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    ix = faiss.IndexFlatIP(dim)
    ix.add(train)
    sims, ids = ix.search(test, 100)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["distance"] = "angular"
        f.attrs["dimension"] = dim
        f.create_dataset("train", data=train)
        f.create_dataset("test", data=test)
        f.create_dataset("neighbors", data=ids.astype(np.int32))
        f.create_dataset("distances", data=(1.0 - sims).astype(np.float32))
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def glove_dataset(tools):
    path = os.path.join(DATA, "glove-50-angular.hdf5")
    if os.path.exists(path):
        return path
    try:
        subprocess.run([os.path.join(tools, "gyre-datasets"), "fetch", "glove-50", "--dir", DATA],
                       check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"SKIPPED glove50: could not fetch it ({e})", file=sys.stderr)
        return None
    return path if os.path.exists(path) else None


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_gyre(tools, dataset, out_dir, args):
    base = [os.path.join(tools, "gyre-bench"), "recall", "--dataset", dataset, "--algorithm", "gyre",
            "--threads", args.threads, "--mode", "batch,single", "--runs", str(args.runs),
            "--k", "10"]
    if args.queries:
        base += ["--queries", str(args.queries)]
    rows = []
    grids = [
        ("codes", ["--bits", "2,4", "--staged", "0,2,4,8,12,16,24,32,64", "--oversample", "1,2,4", "--rerank", "none"]),
        ("rerank", ["--bits", "4", "--staged", "0,2,4,8,16,24,32,48,64,128", "--oversample", "1,2,4,8", "--rerank", "f32",
                    "--target-recall", "0,0.99"]),
    ]
    for name, grid in grids:
        d = os.path.join(out_dir, name)
        subprocess.run(base + grid + ["--out", d], check=True, stdout=subprocess.DEVNULL)
        for f in os.listdir(d):
            if f.endswith("-gyre.csv"):
                rows += read_csv(os.path.join(d, f))
    return rows


def run_peers(dataset, out, args):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "baselines", "run_baselines.py"),
           "--dataset", dataset, "--threads", args.threads, "--mode", "batch,single",
           "--runs", str(args.runs), "--only", PEERS, "--out", out]
    if args.queries:
        cmd += ["--queries", str(args.queries)]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return read_csv(out)


def key(r):
    return (r["algorithm"], r["params"], r["mode"], r["threads"])


def medians(rounds):
    """One row per configuration: the median QPS over rounds (recall is deterministic)."""
    by = {}
    for rows in rounds:
        for r in rows:
            by.setdefault(key(r), []).append(r)
    out = []
    for rs in by.values():
        r = dict(rs[0])
        r["qps"] = statistics.median(float(x["qps"]) for x in rs)
        r["recall"] = float(r["recall"])
        r["rounds"] = len(rs)
        out.append(r)
    return out


def codes_only(r):
    return "rerank=none" in r["params"] or "rerank=" not in r["params"]


def table(name, gyre, peers):
    lines = []
    for p in sorted(peers, key=lambda r: (r["algorithm"], r["params"], r["mode"])):
        refine = "refine=flat" in p["params"]
        floor = p["recall"] - 0.005
        cands = [g for g in gyre if g["mode"] == p["mode"] and g["threads"] == p["threads"]
                 and g["recall"] >= floor and (refine or codes_only(g))]
        best = max(cands, key=lambda g: g["qps"], default=None)
        if best is None:
            lines.append(f"| {name} | {p['algorithm']} {p['params']} | {p['mode']} | "
                         f"{p['qps']:,.0f} ({p['recall']:.3f}) | none reaches {floor:.3f} | — |")
            continue
        g_params = best["params"].replace("variant=mse rotation=hadamard ", "")
        lines.append(f"| {name} | {p['algorithm']} {p['params']} | {p['mode']} | "
                     f"{p['qps']:,.0f} ({p['recall']:.3f}) | {best['qps']:,.0f} ({best['recall']:.3f}) "
                     f"{g_params} | {best['qps'] / p['qps']:.2f}× |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="docs,random768,random1536,glove50")
    ap.add_argument("--out", default="compare", help="name of the table and CSV under results/")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is quoted")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per configuration per round (best kept)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--queries", type=int, default=0, help="use only the first N queries")
    ap.add_argument("--tools", default=os.path.join(ROOT, "target", "release"),
                    help="directory holding gyre-bench and gyre-datasets")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    sets = []
    for name in args.datasets.split(","):
        if name == "docs":
            sets.append((name, os.path.abspath(SHARED_DOCS)))
        elif name.startswith("random"):
            sets.append((name, random_dataset(int(name[len("random"):]))))
        elif name == "glove50":
            path = glove_dataset(args.tools)
            if path:
                sets.append((name, path))
        else:
            sys.exit(f"unknown dataset {name}")
    header = [
        f"CPU: {cpu_model()}; flags: {cpu_flags()}",
        f"threads {args.threads}, k = 10, {args.rounds} interleaved rounds (median QPS), best of "
        f"{args.runs} runs per round; Gyre's best configuration with recall >= peer - 0.005 "
        "(codes only against codes-only peers)",
        "",
        "| data | peer | mode | peer QPS (recall) | Gyre QPS (recall) config | ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines = []
    all_rows = []
    for name, path in sets:
        g_rounds, p_rounds = [], []
        for i in range(args.rounds):
            print(f"{name}: round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
            out_dir = os.path.join(RESULTS, "compare", name, f"round{i}")
            os.makedirs(out_dir, exist_ok=True)
            g_rounds.append(run_gyre(args.tools, path, out_dir, args))
            p_rounds.append(run_peers(path, os.path.join(out_dir, "peers.csv"), args))
        gyre, peers = medians(g_rounds), medians(p_rounds)
        all_rows += gyre + peers
        lines += table(name, gyre, peers)
        print("\n".join(header + lines), flush=True)
    text = "\n".join(header + lines) + "\n"
    with open(os.path.join(RESULTS, args.out + ".md"), "w") as f:
        f.write(text)
    if all_rows:
        fields = list(all_rows[0].keys())
        with open(os.path.join(RESULTS, args.out + ".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(all_rows)
    print(f"wrote {os.path.join(RESULTS, args.out + '.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
