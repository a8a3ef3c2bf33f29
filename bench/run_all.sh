#!/usr/bin/env bash
# Re-runs, one after another, every benchmark whose numbers bench/RESULTS.md quotes
# (run it on an otherwise idle machine: only ratios measured in one run mean anything).
# Each script prints its table; the raw results go to bench/out/ (git-ignored).
#   bash bench/run_all.sh            the settings RESULTS.md quotes (about 25 minutes on 2 cores)
#   BENCH_ONLY="core ep" bash bench/run_all.sh    a subset
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
mkdir -p bench/out
only=${BENCH_ONLY:-"core batching ep serve ray compress tune"}
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%F)"
for b in $only; do
  echo "== $b"
  case $b in
    core)     $py bench/bench_core.py --seconds 4 --large-mb 64 --large-seconds 2 ;;
    batching) $py bench/bench_batching.py --seconds 3 --clients 1,4,16,64 ;;
    ep)       $py bench/bench_ep.py --quick --json bench/out/ep.json ;;
    serve)    $py bench/bench_serve.py --peer mlserver --clients 1,16,64 --seconds 5 ;;
    ray)      $py bench/bench_ray.py --quick ;;
    compress) $py bench/bench_compress.py --quick --out bench/out/compress.json ;;
    tune)     $py bench/bench_tune.py --quick --out bench/out/tune.json ;;
    *) echo "unknown benchmark $b" >&2; exit 2 ;;
  esac
done 2>&1 | tee bench/out/run_all.txt
