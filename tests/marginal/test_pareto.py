"""PSIS k̂ without ArviZ on the estimation path: the same numbers as :func:`arviz.psislw`."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from pyro.ops.stats import fit_generalized_pareto

from ppl_vae.marginal.common import gpd_shape, pareto_k_hat


@pytest.mark.parametrize("k", [21, 100, 1000])
def test_pareto_k_hat_equals_arviz(k):
    import arviz

    g = torch.Generator().manual_seed(k)
    lw = torch.randn(60, k, generator=g, dtype=torch.float64)
    lw = lw * torch.linspace(0.2, 5.0, 60, dtype=torch.float64)[:, None]
    lw[0] = 0.0  # all equal: not defined
    lw[1, : k // 2] = 1.0  # ties in the tail
    mine = pareto_k_hat(lw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref = arviz.psislw(lw.numpy().copy(), reff=1.0)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    ref[~torch.isfinite(ref)] = float("nan")
    assert torch.equal(torch.isnan(mine), torch.isnan(ref))
    both = ~torch.isnan(ref)
    assert torch.allclose(mine[both], ref[both], atol=1e-10, rtol=0)


def test_gpd_shape_is_pyros_fit_row_by_row():
    x = torch.sort(torch.rand(4, 57, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64) ** 3, -1).values
    want = torch.tensor([fit_generalized_pareto(row)[0] for row in x], dtype=torch.float64)
    assert torch.allclose(gpd_shape(x), want, atol=1e-12)


def test_estimation_imports_no_arviz():
    code = ("import sys, torch, pyro, pyro.distributions as dist\n"
            "from ppl_vae.marginal import importance_sampling\n"
            "def model(x):\n"
            "    with pyro.plate('data', len(x)):\n"
            "        z = pyro.sample('z', dist.Normal(0., 1.))\n"
            "        pyro.sample('x', dist.Normal(z, 1.), obs=x)\n"
            "def guide(x):\n"
            "    with pyro.plate('data', len(x)):\n"
            "        pyro.sample('z', dist.Normal(0., 2.))\n"
            "r = importance_sampling(model, guide, torch.randn(5), 100, seed=0)\n"
            "assert torch.isfinite(r.pareto_k).all()\n"
            "print('arviz' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
