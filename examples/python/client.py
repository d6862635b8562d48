#!/usr/bin/env python3
"""A short Gyre client: create a collection, load the shared MiniLM set with payloads, search,
check recall, then a filtered search, a filtered count and a scroll.

    pip install grpcio grpcio-tools h5py numpy
    python examples/python/client.py --target 127.0.0.1:50051 \
        --dataset ../shared/datasets/docs-minilm-384-angular.hdf5

The stubs are generated at run time from proto/gyre/v1/gyre.proto with grpcio-tools, so
nothing generated is checked in. Add --api-key KEY when the server runs with API keys.
"""

import argparse
import importlib
import os
import sys
import tempfile
import time

import grpc
import h5py
import numpy as np
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def load_stubs():
    out = tempfile.mkdtemp(prefix="gyre-stubs-")
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
        f"--grpc_python_out={out}", os.path.join(PROTO_ROOT, "gyre", "v1", "gyre.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    return importlib.import_module("gyre.v1.gyre_pb2"), importlib.import_module("gyre.v1.gyre_pb2_grpc")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--dataset", required=True, help="ann-benchmarks HDF5 (train/test/neighbors)")
    ap.add_argument("--collection", default="minilm")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()

    pb, rpc = load_stubs()
    meta = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None
    channel = grpc.insecure_channel(args.target, options=[("grpc.max_receive_message_length", 64 << 20)])
    collections = rpc.CollectionsStub(channel)
    points = rpc.PointsStub(channel)
    search = rpc.SearchStub(channel)

    with h5py.File(args.dataset, "r") as f:
        train = np.asarray(f["train"], dtype=np.float32)
        test = np.asarray(f["test"], dtype=np.float32)[: args.queries]
        truth = np.asarray(f["neighbors"])[: args.queries, :10]
    n, dim = train.shape

    names = collections.List(pb.ListCollectionsRequest(), metadata=meta).names
    if args.collection in names:
        collections.Delete(pb.DeleteCollectionRequest(name=args.collection), metadata=meta)
    # Payload fields can be declared (and indexed) up front; others take their first type.
    info = collections.Create(pb.CreateCollectionRequest(
        name=args.collection, dim=dim, metric=pb.METRIC_COSINE, bits=4,
        rerank=pb.RERANK_STORAGE_F32,
        payload_schema=[pb.FieldSchema(field="lang", type=pb.FIELD_TYPE_KEYWORD, indexed=True),
                        pb.FieldSchema(field="year", type=pb.FIELD_TYPE_INTEGER, indexed=True)]),
        metadata=meta)
    print(f"created {info.name}: dim {info.dim}, {info.bits} bits")

    langs = ["en", "de", "fr", "ja"]

    def payload(i):
        # A synthetic payload: a keyword, an integer and a keyword list.
        return pb.Payload(fields={
            "lang": pb.Value(keyword=langs[i % 4]),
            "year": pb.Value(integer=2000 + i % 25),
            "tags": pb.Value(keywords=pb.KeywordList(values=[f"t{i % 7}"])),
        })

    def batches():
        for start in range(0, n, args.batch):
            rows = train[start:start + args.batch]
            ids = range(start, start + len(rows))
            yield pb.UpsertRequest(collection=args.collection, ids=ids,
                                   vectors=rows.ravel().tolist(),
                                   payloads=[payload(i) for i in ids], wait=True)

    t = time.time()
    sent = points.UpsertStream(batches(), metadata=meta)
    print(f"upserted {sent.upserted} points in {sent.batches} batches, {time.time() - t:.1f} s")

    hits = 0
    t = time.time()
    for q, want in zip(test, truth):
        res = search.Search(pb.SearchRequest(collection=args.collection, vector=q.tolist(), k=10),
                            metadata=meta)
        hits += len({r.id for r in res.results} & set(int(w) for w in want))
    qps = len(test) / (time.time() - t)
    recall = hits / (10 * len(test))
    print(f"recall@10 {recall:.4f} over {len(test)} queries, {qps:.0f} queries/s")
    if recall < 0.9:
        sys.exit("recall below 0.9")

    # Filtered search: German points from 2010 on, with their payloads.
    flt = pb.Filter(must=[
        pb.Condition(field="lang", match=pb.Match(keyword="de")),
        pb.Condition(field="year", range=pb.Range(gte=2010)),
    ])
    res = search.Search(pb.SearchRequest(collection=args.collection, vector=test[0].tolist(), k=10,
                                         filter=flt, with_payload=True), metadata=meta)
    ok = all(r.payload["lang"].keyword == "de" and r.payload["year"].integer >= 2010
             for r in res.results)
    count = points.Count(pb.CountRequest(collection=args.collection, filter=flt), metadata=meta).count
    want = sum(1 for i in range(n) if i % 4 == 1 and 2000 + i % 25 >= 2010)
    print(f"filtered search: {len(res.results)} results, all matching: {ok}; "
          f"count {count} (expected {want}); unindexed fields: {list(res.filter_stats.unindexed_fields)}")
    if not ok or count != want or len(res.results) != 10:
        sys.exit("filtered search or count is wrong")

    # Scroll the first page of points tagged t3, payloads included.
    page = points.Scroll(pb.ScrollRequest(
        collection=args.collection, limit=5, with_payload=True,
        filter=pb.Filter(must=[pb.Condition(field="tags", match=pb.Match(keyword="t3"))])),
        metadata=meta)
    print(f"scroll: ids {[p.id for p in page.points]}, next after {page.next_after}")


if __name__ == "__main__":
    main()
