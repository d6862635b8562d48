#!/usr/bin/env bash
# Searches an on-disk collection inside a memory cgroup smaller than its rerank vectors, to show
# that the codes stay resident and the vectors are paged in on demand.
#
#   bench/memory-limit.sh DATA_DIR LIMIT_MIB [QUERIES]
#
# DATA_DIR holds an `ingest` collection (gyre-bench ingest --random 1000000 --data-dir DATA_DIR).
# Needs root and a cgroup-v1 memory controller (/sys/fs/cgroup/memory) or cgroup v2.
set -euo pipefail
usage="usage: bench/memory-limit.sh DATA_DIR LIMIT_MIB [QUERIES]"
dir=${1:?$usage}; limit_mib=${2:?$usage}; queries=${3:-2000}
bin=target/release/gyre-bench
cargo build --release -q -p gyre-bench
# Evict the segment files from the page cache, so the pages the search touches are read (and
# charged) inside the limited group rather than left charged to whoever cached them before.
for f in "$dir"/collections/ingest/*.gseg; do dd if="$f" iflag=nocache count=0 status=none; done
grep -E '^(Cached|MemFree)' /proc/meminfo
if [ -d /sys/fs/cgroup/memory ]; then
  cg=/sys/fs/cgroup/memory/gyre-bench
  mkdir -p "$cg"
  echo $((limit_mib * 1024 * 1024)) > "$cg/memory.limit_in_bytes"
  echo 0 > "$cg/memory.max_usage_in_bytes" 2>/dev/null || true
  sh -c "echo \$\$ > $cg/cgroup.procs; exec $bin ingest --search-only --data-dir '$dir' --queries $queries"
  oom=$(awk '/^oom_kill /{print $2}' "$cg/memory.oom_control" 2>/dev/null); oom=${oom:-0}
  echo "cgroup peak usage: $(( $(cat $cg/memory.max_usage_in_bytes) / 1048576 )) MiB (limit $limit_mib MiB); OOM kills: $oom"
  rmdir "$cg" 2>/dev/null || true
else
  cg=/sys/fs/cgroup/gyre-bench
  mkdir -p "$cg"
  echo $((limit_mib * 1024 * 1024)) > "$cg/memory.max"
  sh -c "echo \$\$ > $cg/cgroup.procs; exec $bin ingest --search-only --data-dir '$dir' --queries $queries"
  echo "cgroup peak usage: $(( $(cat $cg/memory.peak 2>/dev/null || echo 0) / 1048576 )) MiB (limit $limit_mib MiB)"
  rmdir "$cg" 2>/dev/null || true
fi
