# IAF vs diagonal guide: IS log-likelihood of two runs on the same test points (docs/toolkit.md).
# usage (from the repository root): python benchmarks/iaf_vs_diagonal.py K N   (runs in
# /tmp/wt11-runs/bm/{bottom-up,iaf})
import json
import math
import sys
import time

sys.path.insert(0,
                __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
import pyro
import torch

torch.set_num_threads(1)
from ppl_vae import importance_sampling, load_run  # noqa: E402

K, N = int(sys.argv[1]), int(sys.argv[2])
ROOT = sys.argv[3] if len(sys.argv) > 3 else "/tmp/wt11-runs/bm"
out = {}
lls = {}
for g in ("bottom-up", "iaf"):
    r = load_run(f"{ROOT}/{g}")
    x = r.split("test")[:N]
    pyro.set_rng_seed(0)
    t = time.time()
    res = importance_sampling(r.model, r.guide, x, K)
    lls[g] = res.log_likelihood
    out[g] = {"log_likelihood": float(res.log_likelihood.mean()),
              "stderr": float(res.log_likelihood.std() / math.sqrt(N)),
              "elbo": float(res.log_weight_mean.mean()), "ess_mean": float(res.ess.mean()),
              "seconds": time.time() - t, "epochs": int(r.checkpoint["epochs_done"]),
              "train_seconds": float(r.checkpoint["elapsed"])}
d = lls["iaf"] - lls["bottom-up"]
out["iaf_minus_diag"] = {"mean": float(d.mean()), "paired_stderr": float(d.std() / math.sqrt(N))}
out["K"], out["N"] = K, N
print(json.dumps(out, indent=1))
