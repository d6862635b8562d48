#!/usr/bin/env bash
# One-thread build times, Gyre's graph index against hnswlib (M = 16, efC = 100), interleaved
# so that both see the same machine: ROUNDS × (Gyre build, hnswlib build) per dataset.
# Gyre's figure is the runner's build_s (encoding the codes + linking the graph).
#
#   bench/build-times.sh ROUNDS FILE...
set -euo pipefail
rounds=${1:?usage: bench/build-times.sh ROUNDS FILE...}
shift
py=bench/baselines/.venv/bin/python
for file in "$@"; do
  for r in $(seq "$rounds"); do
    g=$(target/release/gyre-bench recall --dataset "$file" --algorithm gyre --index graph --bits 4 \
        --rerank f32 --oversample 2 --staged 0 --ef 64 --mode single --runs 1 --queries 100 \
        --threads 1 --json --out "${TMPDIR:-/tmp}/gyre-build-times" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["build_s"])')
    h=$("$py" - "$file" <<'PY'
import sys, time
sys.path.insert(0, "bench/baselines")
import hnswlib, numpy as np
from run_baselines import load
train, _, _, distance = load(sys.argv[1], None)
space = {"angular": "cosine", "euclidean": "l2", "dot": "ip"}[distance]
ix = hnswlib.Index(space=space, dim=train.shape[1])
ix.init_index(max_elements=len(train), ef_construction=100, M=16)
t = time.perf_counter()
ix.add_items(train, np.arange(len(train)), num_threads=1)
print(time.perf_counter() - t)
PY
)
    printf '%s round %s: gyre %.1f s, hnswlib %.1f s, ratio %.2f\n' "$(basename "$file")" "$r" "$g" "$h" \
      "$(python3 -c "print($g / $h)")"
  done
done
