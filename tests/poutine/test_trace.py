"""The trace vocabulary (ppl_vae.poutine.trace) on programs written in several Pyro idioms."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.transforms import AffineTransform, ExpTransform
from torch import nn

from ppl_vae.poutine.trace import (
    is_latent,
    latent_sites,
    observed_sites,
    per_point,
    plate_nesting,
    point_estimate,
    sample_sites,
    site_mean,
    trainable_tensors,
)


def subsampled(x):
    with pyro.plate("data", 10, subsample_size=x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    pyro.sample("g", dist.Gamma(2.0, 1.0))


def test_latent_and_observed_sites_leave_out_subsample_sites():
    tr = poutine.trace(subsampled).get_trace(torch.zeros(3))
    assert "data" in tr.nodes and tr.nodes["data"]["type"] == "sample"  # the subsample site
    assert list(latent_sites(tr)) == ["z", "g"]
    assert list(observed_sites(tr)) == ["x"]
    assert list(sample_sites(tr)) == ["z", "x", "g"]
    assert not is_latent(tr.nodes["data"]) and is_latent(tr.nodes["g"])


def test_site_mean_default_only_where_there_is_no_mean():
    assert torch.equal(site_mean(dist.Normal(torch.tensor(2.0), 1.0)), torch.tensor(2.0))
    flow = dist.TransformedDistribution(dist.Normal(0.0, 1.0), [ExpTransform()])
    with pytest.raises(NotImplementedError):
        site_mean(flow)
    assert site_mean(flow, torch.tensor(7.0)) == 7.0
    assert site_mean(flow, lambda: torch.tensor(8.0)) == 8.0


def test_point_estimate_pushes_the_base_mean_through_a_flow():
    flow = dist.TransformedDistribution(dist.Normal(torch.tensor(1.0), 1.0),
                                        [AffineTransform(3.0, 2.0)])
    assert point_estimate(dist.Independent(flow.expand([1]), 1)).item() == pytest.approx(5.0)
    with pytest.raises(NotImplementedError):
        point_estimate(dist.ImproperUniform(dist.constraints.real, (), ()))


def test_trainable_tensors_of_a_module_and_of_param_statements():
    net = nn.Linear(2, 1)

    def fn(x):
        pyro.module("net", net)
        loc = pyro.param("loc", torch.zeros(()))
        scale = pyro.param("scale", torch.ones(()), constraint=dist.constraints.positive)
        pyro.sample("z", dist.Normal(loc + net(x).sum(), scale))

    pyro.clear_param_store()
    found = trainable_tensors(fn, torch.zeros(1, 2))
    ids = {id(t) for t in found}
    assert {id(net.weight), id(net.bias)} <= ids
    assert id(pyro.param("loc")) in ids
    assert id(pyro.param("scale").unconstrained()) in ids
    assert len(found) == 4  # each once


def test_per_point_sums_every_plate_but_the_data_plate():
    t = torch.arange(24.0).reshape(2, 3, 4)  # (particles, pixels at -2... ) data at -1
    out = per_point(t, max_plate_nesting=2, data_dim=-1)
    assert out.shape == (2, 4)
    assert torch.equal(out, t.sum(1))
    out = per_point(t, max_plate_nesting=2, data_dim=-2)
    assert torch.equal(out, t.sum(2))
    assert per_point(torch.tensor(1.0), 1, -1).shape == (1, 1)


def test_plate_nesting():
    def nested(x):
        with pyro.plate("a", 2, dim=-3), pyro.plate("b", 3):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    assert plate_nesting(poutine.trace(nested).get_trace(None)) == 3
