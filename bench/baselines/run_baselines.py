#!/usr/bin/env python3
"""Reference ANN libraries on an ann-benchmarks HDF5 file, in gyre-bench recall's CSV schema.

Runs FAISS (exact, PQ FastScan, its TurboQuant scalar quantizers, RaBitQ, HNSW), turbovec,
qdrant-edge (TurboQuant quantization, flat and HNSW, with rescoring), hnswlib and USearch with
the same k, thread counts, modes and recall definition as `gyre-bench recall`, so that
`gyre-bench plot` can overlay the rows. Each thread count runs in its own child process so that
every library's thread pool (OpenMP, rayon, its own) is sized before it is imported.

    bench/baselines/setup.sh          # once: creates bench/baselines/.venv
    bench/baselines/.venv/bin/python bench/baselines/run_baselines.py \
        --dataset ../shared/datasets/docs-minilm-384-angular.hdf5 --threads 1,2 --mode batch,single
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FIELDS = [
    "dataset", "algorithm", "params", "k", "recall", "recall_1_at_k", "qps", "p50_ms", "p95_ms",
    "p99_ms", "build_s", "index_bytes", "rss_delta_bytes", "threads", "mode", "cpu", "isa",
    "queries", "runs",
]

ALL = ["faiss-flat", "faiss-pqfastscan", "faiss-pqfastscan-refine", "faiss-tq", "faiss-rabitq",
       "faiss-rabitq-fastscan", "faiss-hnsw", "turbovec", "qdrant-flat", "qdrant-hnsw", "hnswlib",
       "usearch"]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.machine()


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:
        return None


def load(path, queries):
    import h5py
    import numpy as np
    with h5py.File(path, "r") as f:
        distance = f.attrs["distance"]
        distance = distance.decode() if isinstance(distance, bytes) else str(distance)
        train = np.asarray(f["train"], dtype=np.float32)
        test = np.asarray(f["test"], dtype=np.float32)
        gt_dist = np.asarray(f["distances"], dtype=np.float32)
    if queries:
        test, gt_dist = test[:queries], gt_dist[:queries]
    return train, test, gt_dist, distance


def exact_distances(distance, q, xs):
    import numpy as np
    q = q.astype(np.float64)
    xs = xs.astype(np.float64)
    if distance == "angular":
        return 1.0 - xs @ q / (np.linalg.norm(xs, axis=1) * np.linalg.norm(q))
    if distance == "euclidean":
        return np.sqrt(((xs - q) ** 2).sum(axis=1))
    return -(xs @ q)


def recall(distance, train, test, gt_dist, ids, k):
    """ann-benchmarks' rule: a returned id is a hit when its recomputed distance is within the
    true k-th distance + 1e-3; recall@1@k: the true nearest distance is reached."""
    import numpy as np
    hits = top1 = 0
    for q in range(len(test)):
        got = [int(i) for i in ids[q][:k] if int(i) >= 0]
        if not got:
            continue
        d = exact_distances(distance, test[q], train[got])
        hits += int((d <= gt_dist[q][k - 1] + 1e-3).sum())
        top1 += int((d <= gt_dist[q][0] + 1e-6).any())
    return hits / (len(test) * k), top1 / len(test)


# Scratch space of on-disk indexes (qdrant-edge shards), removed when the run ends.
TMP = tempfile.mkdtemp(prefix="gyre-baselines-")


class Config:
    """One index configuration: build() then search_batch / search_one (ids, k columns)."""

    def __init__(self, algorithm, params, build, batch, single, size, isa="", group=None):
        self.algorithm, self.params = algorithm, params
        self.build, self.batch, self.single, self.size, self.isa = build, batch, single, size, isa
        # Configurations of one group share one built index (a search-time sweep).
        self.group = group or (algorithm, params)


def pq_subquantizers(name, d, bits_per_dim):
    """M for 4-bit PQ codes at `bits_per_dim`, or None (with a visible note) when M would not
    divide d, which FAISS refuses."""
    m = d * bits_per_dim // 4
    if d * bits_per_dim % 4 or m == 0 or d % m:
        print(f"SKIPPED {name} bits/dim={bits_per_dim}: PQ needs M = {d}·{bits_per_dim}/4 to divide d", file=sys.stderr)
        return None
    return m


def faiss_configs(name, d, metric_ip, train, threads):
    import faiss
    import numpy as np
    metric = faiss.METRIC_INNER_PRODUCT if metric_ip else faiss.METRIC_L2
    isa = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else ""
    sample = train[np.random.default_rng(0).permutation(len(train))[: min(len(train), 50_000)]]

    def size(ix):
        return int(faiss.serialize_index(ix).size)

    def make(build_fn, algorithm, params, tune=None, group=None, holder=None):
        holder = {} if holder is None else holder

        def build():
            holder["ix"] = build_fn()
            return holder["ix"]

        def batch(q, k):
            if tune:
                tune(holder["ix"])
            return holder["ix"].search(q, k)[1]

        def single(q, k):
            return holder["ix"].search(q[None, :], k)[1][0]

        return Config(algorithm, params, build, batch, single, lambda: size(holder["ix"]), isa, group)

    out = []
    if name == "faiss-flat":
        def b():
            ix = faiss.IndexFlatIP(d) if metric_ip else faiss.IndexFlatL2(d)
            ix.add(train)
            return ix
        out.append(make(b, name, "IndexFlat (exact)"))
    if name == "faiss-pqfastscan":
        for bits_per_dim in (2, 4):
            m = pq_subquantizers(name, d, bits_per_dim)
            if m is None:
                continue

            def b(m=m):
                ix = faiss.IndexPQFastScan(d, m, 4, metric)
                ix.train(sample)
                ix.add(train)
                return ix
            out.append(make(b, name, f"bits/dim={bits_per_dim} M={m} nbits=4"))
    if name == "faiss-pqfastscan-refine":
        for bits_per_dim in (1, 2):
            m = pq_subquantizers(name, d, bits_per_dim)
            if m is None:
                continue
            shared = {}

            def b(m=m):
                base = faiss.IndexPQFastScan(d, m, 4, metric)
                ix = faiss.IndexRefineFlat(base)
                ix.train(sample)
                ix.add(train)
                return ix
            for k_factor in (4, 10, 20):
                def tune(ix, kf=k_factor):
                    ix.k_factor = kf
                out.append(make(b, name, f"bits/dim={bits_per_dim} M={m} refine=flat k_factor={k_factor}", tune,
                                group=(name, bits_per_dim), holder=shared))
    if name == "faiss-tq":
        for qt_name, bits in (("QT_2bit_tqmse", 2), ("QT_4bit_tqmse", 4)):
            if not hasattr(faiss.ScalarQuantizer, qt_name):
                continue

            def b(qt=getattr(faiss.ScalarQuantizer, qt_name)):
                rot = faiss.RandomRotationMatrix(d, d)
                rot.init(1234)
                sq = faiss.IndexScalarQuantizer(d, qt, metric)
                ix = faiss.IndexPreTransform(rot, sq)
                ix.train(sample)
                ix.add(train)
                return ix
            out.append(make(b, name, f"bits={bits} {qt_name} random-rotation"))
    if name in ("faiss-rabitq", "faiss-rabitq-fastscan"):
        for nb in (1, 2, 4):
            def plain(nb=nb):
                ix = (faiss.IndexRaBitQ(d, metric, nb) if name == "faiss-rabitq"
                      else faiss.IndexRaBitQFastScan(d, metric, 32, nb))
                ix.train(sample)
                ix.add(train)
                return ix
            out.append(make(plain, name, f"bits={nb} refine=none"))

            shared = {}

            def b(nb=nb):
                base = (faiss.IndexRaBitQ(d, metric, nb) if name == "faiss-rabitq"
                        else faiss.IndexRaBitQFastScan(d, metric, 32, nb))
                ix = faiss.IndexRefineFlat(base)
                ix.train(sample)
                ix.add(train)
                return ix
            for k_factor in (4, 10):
                def tune(ix, kf=k_factor):
                    ix.k_factor = kf
                out.append(make(b, name, f"bits={nb} refine=flat k_factor={k_factor}", tune,
                                group=(name, nb), holder=shared))
    if name == "faiss-hnsw":
        shared = {}

        def b():
            ix = faiss.IndexHNSWFlat(d, 32, metric)
            ix.hnsw.efConstruction = 100
            ix.add(train)
            return ix
        for ef in (16, 32, 64, 128, 256):
            def tune(ix, ef=ef):
                ix.hnsw.efSearch = ef
            out.append(make(b, name, f"M=32 efC=100 efSearch={ef}", tune, group=name, holder=shared))
    return out


def turbovec_configs(d, metric_ip, train):
    import turbovec
    out = []
    if not metric_ip:
        return out
    for bits in (2, 4):
        holder = {}

        def build(bits=bits, h=holder):
            ix = turbovec.TurboQuantIndex(dim=d, bit_width=bits)
            ix.add(train)
            h["ix"] = ix
            return ix
        out.append(Config(
            "turbovec", f"bits={bits}", build,
            lambda q, k, h=holder: h["ix"].search(q, k)[1],
            lambda q, k, h=holder: h["ix"].search(q[None, :], k)[1][0],
            lambda h=holder: len(h["ix"].to_bytes()),
            "turbovec " + turbovec.__version__,
        ))
    return out


def qdrant_configs(name, d, distance, train, threads):
    import numpy as np
    import qdrant_edge as qe
    dist = {"angular": qe.Distance.Cosine, "euclidean": qe.Distance.Euclid, "dot": qe.Distance.Dot}[distance]
    out = []
    hnsw = name == "qdrant-hnsw"
    for bits_name, bits in (("Bits2", 2), ("Bits4", 4)):
        holder = {}

        def build(bits_name=bits_name, holder=holder):
            path = tempfile.mkdtemp(prefix="qdrant-edge-", dir=TMP)
            holder["path"] = path
            quant = qe.TurboQuantQuantizationConfig(bits=getattr(qe.TurboQuantBitSize, bits_name), always_ram=True)
            params = qe.EdgeVectorParams(size=d, distance=dist, quantization_config=quant)
            # Flat: keep segments below the indexing threshold so no HNSW is built.
            threshold = 1 if hnsw else 10**9
            config = qe.EdgeConfig(
                vectors=params,
                hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=1, max_indexing_threads=threads),
                optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold, default_segment_number=1),
                max_search_threads=threads,
                wal_enabled=False,
            )
            shard = qe.EdgeShard.create(path, config)
            for start in range(0, len(train), 2000):
                chunk = train[start:start + 2000]
                points = [qe.Point(id=start + i, vector=v.tolist()) for i, v in enumerate(chunk)]
                shard.update(qe.UpdateOperation.upsert_points(points))
            shard.optimize()
            holder["shard"] = shard
            return shard

        def size(h=holder):
            total = 0
            for root, _, files in os.walk(h["path"]):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
            return total

        sweeps = [(ef, os_) for ef in (32, 64, 128) for os_ in (1.0, 2.0)] if hnsw else [(None, os_) for os_ in (1.0, 2.0, 4.0)]
        for ef, oversampling in sweeps:
            def search_params(ef=ef, oversampling=oversampling):
                return qe.SearchParams(
                    hnsw_ef=ef, exact=False,
                    quantization=qe.QuantizationSearchParams(rescore=True, oversampling=oversampling))

            def request(q, k, sp=search_params):
                return qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist()), params=sp(), with_payload=False)

            def ids(points, k):
                row = [int(p.id) for p in points][:k]
                return row + [-1] * (k - len(row))

            def batch(q, k, h=holder, request=request):
                res = h["shard"].query_batch(qe.QueryBatchRequest([request(x, k) for x in q]))
                return np.array([ids(r, k) for r in res])

            def single(q, k, h=holder, request=request):
                return np.array(ids(h["shard"].query(request(q, k)), k))
            label = f"turboquant bits={bits} rescore oversampling={oversampling}" + (f" hnsw m=16 ef={ef}" if hnsw else " plain")
            out.append(Config(name, label, build, batch, single, size, "qdrant-edge", group=(name, bits)))
    return out


HNSW_EFS = (16, 32, 64, 96, 128, 192, 256, 384, 512)


def hnswlib_configs(d, distance, train, threads, efs=HNSW_EFS):
    import hnswlib
    import numpy as np
    space = {"angular": "cosine", "euclidean": "l2", "dot": "ip"}[distance]
    holder = {}

    def build():
        ix = hnswlib.Index(space=space, dim=d)
        ix.init_index(max_elements=len(train), ef_construction=100, M=16)
        ix.add_items(train, np.arange(len(train)), num_threads=threads)
        holder["ix"] = ix
        return ix

    def size():
        f = tempfile.NamedTemporaryFile(delete=False)
        f.close()
        holder["ix"].save_index(f.name)
        n = os.path.getsize(f.name)
        os.unlink(f.name)
        return n
    out = []
    for ef in efs:
        def batch(q, k, ef=ef):
            holder["ix"].set_ef(max(ef, k))
            return holder["ix"].knn_query(q, k, num_threads=threads)[0]

        def single(q, k, ef=ef):
            holder["ix"].set_ef(max(ef, k))
            return holder["ix"].knn_query(q[None, :], k, num_threads=1)[0][0]
        out.append(Config("hnswlib", f"M=16 efC=100 ef={ef}", build, batch, single, size, group="hnswlib"))
    return out


def usearch_configs(d, distance, train, threads):
    import numpy as np
    from usearch.index import Index
    metric = {"angular": "cos", "euclidean": "l2sq", "dot": "ip"}[distance]
    holder = {}

    def build():
        ix = Index(ndim=d, metric=metric, dtype="f32", connectivity=16, expansion_add=128)
        ix.add(np.arange(len(train)), train, threads=threads)
        holder["ix"] = ix
        return ix
    out = []
    for ef in (16, 32, 64, 128, 256):
        def batch(q, k, ef=ef):
            holder["ix"].expansion_search = max(ef, k)
            return holder["ix"].search(q, k, threads=threads).keys

        def single(q, k, ef=ef):
            holder["ix"].expansion_search = max(ef, k)
            return np.asarray(holder["ix"].search(q, k).keys).reshape(-1)
        out.append(Config("usearch", f"M=16 efC=128 ef={ef} f32", build, batch, single,
                          lambda: len(holder["ix"].save()), group="usearch"))
    return out


def child(args):
    """Runs every selected algorithm at one thread count; prints rows as JSON lines."""
    import numpy as np
    threads = args.child_threads
    train, test, gt_dist, distance = load(args.dataset, args.queries)
    d = train.shape[1]
    metric_ip = distance in ("angular", "dot")
    # Inner-product libraries see normalised vectors for the angular distance.
    tr, te = train, test
    if distance == "angular":
        tr = train / np.linalg.norm(train, axis=1, keepdims=True)
        te = test / np.linalg.norm(test, axis=1, keepdims=True)
        tr, te = tr.astype(np.float32), te.astype(np.float32)
    dataset = os.path.splitext(os.path.basename(args.dataset))[0]
    cpu = cpu_name()
    for name in args.only:
        try:
            if name.startswith("faiss"):
                import faiss
                faiss.omp_set_num_threads(threads)
                configs = faiss_configs(name, d, metric_ip, tr, threads)
            elif name == "turbovec":
                configs = turbovec_configs(d, metric_ip, tr)
            elif name.startswith("qdrant"):
                configs = qdrant_configs(name, d, distance, train, threads)
            elif name == "hnswlib":
                configs = hnswlib_configs(d, distance, train, threads, args.hnsw_ef)
            elif name == "usearch":
                configs = usearch_configs(d, distance, train, threads)
            else:
                print(f"unknown algorithm {name}", file=sys.stderr)
                continue
        except ImportError as e:
            print(f"SKIPPED {name}: {e}", file=sys.stderr)
            continue
        q_in = te if name.startswith(("faiss", "turbovec")) else test
        built = None
        failed = None
        for c in configs:
            if c.group == failed:
                continue
            if built != c.group:
                rss0 = rss_bytes()
                t0 = time.perf_counter()
                try:
                    c.build()
                except Exception as e:  # a library refusing a configuration skips it, visibly
                    print(f"SKIPPED {c.algorithm} {c.params}: {e}", file=sys.stderr)
                    failed = c.group
                    continue
                build_s = time.perf_counter() - t0
                rss = (rss_bytes() - rss0) if rss0 is not None else None
                size = c.size()
                built = c.group
            for mode in args.mode:
                best = None
                for _ in range(args.runs):
                    if mode == "batch":
                        t = time.perf_counter()
                        ids = np.asarray(c.batch(q_in, args.k))
                        secs = time.perf_counter() - t
                        lat = None
                    else:
                        lat = []
                        rows = []
                        t = time.perf_counter()
                        for q in q_in:
                            s = time.perf_counter()
                            rows.append(np.asarray(c.single(q, args.k)).reshape(-1))
                            lat.append((time.perf_counter() - s) * 1e3)
                        secs = time.perf_counter() - t
                        ids = np.stack(rows)
                        lat.sort()
                    qps = len(q_in) / secs
                    if best is None or qps > best[0]:
                        best = (qps, lat, ids)
                qps, lat, ids = best
                rec, rec1 = recall(distance, train, test, gt_dist, ids, args.k)

                def pct(p):
                    return None if lat is None else lat[min(len(lat) - 1, round((len(lat) - 1) * p))]
                row = dict(
                    dataset=dataset, algorithm=c.algorithm, params=c.params, k=args.k, recall=rec,
                    recall_1_at_k=rec1, qps=qps, p50_ms=pct(0.5), p95_ms=pct(0.95), p99_ms=pct(0.99),
                    build_s=build_s, index_bytes=size, rss_delta_bytes=rss, threads=threads, mode=mode,
                    cpu=cpu, isa=c.isa, queries=len(q_in), runs=args.runs,
                )
                print(json.dumps(row), flush=True)
                print(f"{c.algorithm:<24} {c.params:<58} {threads}t {mode:<6} recall {rec:.4f} "
                      f"r@1@k {rec1:.4f} {qps:9.1f} QPS", file=sys.stderr, flush=True)
        if name.startswith("qdrant"):
            shutil.rmtree(TMP, ignore_errors=True)
            os.makedirs(TMP, exist_ok=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", default="1")
    p.add_argument("--mode", default="batch", help="batch, single or batch,single")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    p.add_argument("--only", default=",".join(ALL), help="comma-separated subset of: " + ", ".join(ALL))
    p.add_argument("--out", default=None, help="CSV path (default results/<dataset>-baselines.csv)")
    p.add_argument("--hnsw-ef", default=",".join(map(str, HNSW_EFS)),
                   help="hnswlib search ef values to sweep (comma-separated)")
    p.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.mode = [m for m in args.mode.split(",") if m]
    args.only = [a for a in args.only.split(",") if a]
    args.hnsw_ef = [int(e) for e in args.hnsw_ef.split(",") if e]
    if args.child_threads is not None:
        try:
            return child(args)
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
    shutil.rmtree(TMP, ignore_errors=True)

    dataset = os.path.splitext(os.path.basename(args.dataset))[0]
    out = args.out or os.path.join("results", f"{dataset}-baselines.csv")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd = [sys.executable, __file__, "--dataset", args.dataset, "--k", str(args.k), "--mode",
               ",".join(args.mode), "--runs", str(args.runs), "--only", ",".join(args.only),
               "--child-threads", str(threads), "--hnsw-ef", ",".join(map(str, args.hnsw_ef))]
        if args.queries:
            cmd += ["--queries", str(args.queries)]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
        if proc.returncode != 0:
            print(f"child for {threads} threads exited with {proc.returncode}", file=sys.stderr)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in FIELDS})
    print(out)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
