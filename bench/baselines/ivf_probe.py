#!/usr/bin/env python3
"""The inverted-file alternative to Gyre's graph, measured: FAISS IVF + PQFastScan + RefineFlat.

    bench/baselines/.venv/bin/python bench/baselines/ivf_probe.py --dataset FILE \
        [--nlist 1024] [--bits-per-dim 4] [--k-factor 4] [--nprobe 4,8,16,32,64,128] [--out CSV]

Issue 14 names two structures for a per-segment index: a proximity graph, and an inverted file
whose lists are scanned with FastScan kernels (anchor: FAISS IVF-PQFastScan). This builds the
second with FAISS itself (k-means centroids on a sample of the train set, 4-bit PQ codes in
FastScan layout, f32 rerank of `k × k-factor` candidates, so recall reaches what a graph walk
with rerank reaches) and reports, per nprobe, recall@10 and single-query QPS on one thread,
beside the seconds its build spends fitting (k-means, PQ codebooks) and adding. Training runs
on every thread (on one it takes minutes at 1M × 384); searches on one.
"""

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from run_baselines import load, recall  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--bits-per-dim", type=int, default=4, choices=[1, 2, 4])
    p.add_argument("--k-factor", type=int, default=4)
    p.add_argument("--nprobe", default="4,8,16,32,64,128")
    p.add_argument("--train-sample", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=0, help="use only the first N queries")
    p.add_argument("--out", help="CSV of the rows")
    a = p.parse_args()
    nprobes = [int(x) for x in a.nprobe.split(",") if x]
    if not nprobes or min(nprobes) < 1 or a.nlist < 1 or a.k_factor < 1:
        p.error("nlist, k-factor and every nprobe must be positive")

    train, test, gt_dist, distance = load(a.dataset, a.queries or None)
    train = np.ascontiguousarray(train, dtype=np.float32)
    test = np.ascontiguousarray(test, dtype=np.float32)
    n, d = train.shape
    if distance == "angular":
        # Cosine as inner product on unit vectors, as the other FAISS baselines do.
        train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-30)
        test = test / np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-30)
    metric = faiss.METRIC_L2 if distance == "euclidean" else faiss.METRIC_INNER_PRODUCT
    m = d * a.bits_per_dim // 4
    if m < 1 or (d * a.bits_per_dim) % 4:
        p.error(f"d = {d} does not split into 4-bit subquantizers at {a.bits_per_dim} bits/dim")
    quantizer = faiss.IndexFlatIP(d) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
    base = faiss.IndexIVFPQFastScan(quantizer, d, a.nlist, m, 4, metric)
    ix = faiss.IndexRefineFlat(base)
    rng = np.random.default_rng(0)
    sample = train[rng.choice(n, size=min(n, a.train_sample), replace=False)]
    t = time.perf_counter()
    ix.train(sample)
    train_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    ix.add(train)
    add_s = time.perf_counter() - t
    size = int(faiss.serialize_index(base).size)
    print(f"{os.path.basename(a.dataset)}: {n} × {d}, IVF{a.nlist},PQ{m}x4fs + RefineFlat "
          f"k_factor {a.k_factor}: trained in {train_s:.1f} s (all threads), added in "
          f"{add_s:.1f} s (1 thread), codes + lists {size / n:.0f} bytes/vector without the f32 copies",
          file=sys.stderr)
    k = 10
    rows = []
    for nprobe in nprobes:
        ix.k_factor = a.k_factor
        base.nprobe = nprobe
        ids_all = np.empty((len(test), k), dtype=np.int64)
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for i in range(len(test)):
                _, ids = ix.search(test[i:i + 1], k)
                ids_all[i] = ids[0]
            best = min(best, time.perf_counter() - t)
        r, _ = recall(distance, train, test, gt_dist, ids_all, k)
        qps = len(test) / best
        rows.append({"dataset": os.path.basename(a.dataset), "nlist": a.nlist, "m": m,
                     "k_factor": a.k_factor, "nprobe": nprobe, "recall": round(r, 4),
                     "qps": round(qps, 1), "train_s": round(train_s, 1), "add_s": round(add_s, 1),
                     "bytes_per_vector": round(size / n, 1)})
        print(f"nprobe {nprobe:4d}: recall {r:.4f}  {qps:9.1f} QPS (1 thread, single)", file=sys.stderr)
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
