#!/usr/bin/env bash
# Creates bench/baselines/.venv with the reference libraries the comparison runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install --quiet --upgrade pip
"$here/.venv/bin/pip" install --quiet faiss-cpu turbovec qdrant-edge-py hnswlib usearch h5py numpy
"$here/.venv/bin/pip" list 2>/dev/null | grep -iE "faiss|turbovec|qdrant|hnswlib|usearch|h5py|numpy"
