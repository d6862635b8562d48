#!/usr/bin/env bash
# Issue 14's measurement in one run: Gyre's graph index and hnswlib (M = 16, efC = 100) on
# docs-minilm, glove-50 (twice: first and last, to show the machine's drift) and the 100k /
# 300k / 1M mixtures, one thread, single-query mode, k = 10; then the table.
#
#   bench/graph-suite.sh OUT_DIR [SETS...]     SETS default: docs glove mix-100000 mix-300000 mix-1000000 glove-b
#
# Needs: `cargo build --release -p gyre-bench -p gyre-datasets`, bench/baselines/setup.sh.
# Takes about an hour on 2 cores (the 1M builds dominate); datasets are made under data/ once.
set -euo pipefail
out=${1:?usage: bench/graph-suite.sh OUT_DIR [SETS...]}
shift
sets=${*:-docs glove mix-100000 mix-300000 mix-1000000 glove-b}
mkdir -p "$out" data
bin=target/release
py=bench/baselines/.venv/bin/python
cache=${GRAPH_CACHE:-target/graph-cache}  # built graphs (glove-b reuses glove's)
efs=16,32,64,96,128,192,256,384,512
table=()
for s in $sets; do
  case $s in
    docs) file=../shared/datasets/docs-minilm-384-angular.hdf5; rows=50000; hef=$efs ;;
    glove|glove-b) file=data/glove-50-angular.hdf5; rows=390000; hef=$efs
      [ -f "$file" ] || "$bin/gyre-datasets" fetch glove-50 ;;
    mix-*) rows=${s#mix-}; file=data/mix-$rows-384.hdf5; hef=$efs,768,1024,1536
      [ -f "$file" ] || "$bin/gyre-datasets" mixture --count "$rows" --out "$file" ;;
    *) echo "unknown set $s" >&2; exit 2 ;;
  esac
  echo "== $s ($(date -u +%H:%M:%S))" >&2
  gef=$efs
  case $s in mix-300000|mix-1000000) gef=$efs,768,1024,1536 ;; esac
  "$bin/gyre-bench" recall --dataset "$file" --algorithm gyre --index graph --bits 4 --rerank f32 \
    --oversample 2,4 --staged 0 --ef "$gef" --mode single --runs 2 --threads 1 --json \
    --graph-cache "$cache" > "$out/$s-graph.jsonl" 2> "$out/$s-graph.log"
  "$py" bench/baselines/run_baselines.py --dataset "$file" --only hnswlib --threads 1 \
    --mode single --runs 2 --hnsw-ef "$hef" --out "$out/$s-hnsw.csv" > "$out/$s-hnsw.log" 2>&1
  table+=("$s" "$rows" "$out/$s-graph.jsonl" "$out/$s-hnsw.csv")
done
python3 bench/graph_table.py "${table[@]}" | tee "$out/table.md"
