#!/usr/bin/env bash
# Speed-up of N CPU workers over 1 (docs/distributed.md, "Measured"). One thread per worker.
# Usage: benchmarks/distributed_speed.sh [OUTDIR] [N]   (needs ../shared/data/binarized_mnist.npz)
set -euo pipefail
out=${1:-/tmp/ppl_vae_dist_speed}; n=${2:-2}
export OMP_NUM_THREADS=1
mkdir -p "$out"
for p in 1 "$n"; do
  rm -rf "$out/bm$p" "$out/dg$p"
  # binarized MNIST 784-500-500-50, global batch 100: 500 steps + validation (10000 points)
  /usr/bin/time -f "wall %e s" python3 -m ppl_vae train --data binarized-mnist --latent-dim 50 \
      --hidden 500,500 --batch-size 100 --epochs 1 --no-progress --json --out "$out/bm$p" \
      --nproc "$p"
  # digits 64-256-256-2, global batch 16: 3 epochs of 82 small steps
  /usr/bin/time -f "wall %e s" python3 -m ppl_vae train --data digits --latent-dim 2 \
      --hidden 256,256 --batch-size 16 --epochs 3 --no-progress --json --out "$out/dg$p" \
      --nproc "$p"
done
for p in 1 "$n"; do
  # importance sampling, K = 500, first 1000 test points, on the 1-worker MNIST run
  /usr/bin/time -f "wall %e s" python3 -m ppl_vae evaluate --run "$out/bm1" --estimator is \
      --samples 500 --limit 1000 --no-progress --json --per-point "$out/pp$p.csv" --nproc "$p"
done
cmp "$out/pp1.csv" "$out/pp$n.csv" && echo "per-point results identical for 1 and $n workers"
