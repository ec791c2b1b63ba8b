"""The hand-written SBN estimators of ``benchmarks/sbn_references.py`` are the same estimators
as the ppl_vae objectives they are timed against: with the same seed (the same draws), the same
loss and gradients, for every parameter (the control variate's too, for RELAX)."""

from __future__ import annotations

import pyro
import pytest
import torch
from benchmark_modules import bench

from ppl_vae.guides import BernoulliGuide
from ppl_vae.infer.objectives import make_objective
from ppl_vae.models import SigmoidBeliefNetwork

D, J, B, N = 20, 6, 8, 40



def _grads(tensors):
    out = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out


@pytest.mark.parametrize("name", ["score-loo-2", "score-loo-3", "vimco-2", "vimco-4", "arm",
                                  "disarm", "rebar", "relax"])
def test_hand_written_estimator_matches_the_objective(name):
    refs = bench("sbn_references")
    torch.manual_seed(0)
    model, guide = SigmoidBeliefNetwork(D, J), BernoulliGuide(D, J)
    x = torch.rand(B, D).bernoulli()
    objective = make_objective(name)
    objective.loss_and_grads(model, guide, x, num_data=N)  # max_plate_nesting, lazy layers
    ours_params = [model.prior_logits, model.decoder[0].weight, model.decoder[0].bias,
                   guide.encoder[0].weight, guide.encoder[0].bias]
    extra_ours, extra_ref, args = [], [], ()
    if name == "relax":
        cv = objective.modules["control_variate"]
        with torch.no_grad():  # a control variate whose network is not zero
            cv.eta.fill_(0.8)
            cv.log_temperature.fill_(-0.3)
            for p in cv.net.parameters():
                p.normal_(0.0, 0.1)
        relax = refs.Relax(D, J, hidden=137).load(cv)
        extra_ours, extra_ref, args = list(cv.parameters()), list(relax.parameters()), (relax,)
    for t in ours_params + extra_ours:
        t.grad = None
    pyro.set_rng_seed(11)
    loss = objective.loss_and_grads(model, guide, x, num_data=N)
    ours = _grads(ours_params + extra_ours)

    sbn = refs.TorchSBN(D, J).load_pair(model, guide)
    fn = {"score-loo": refs.score_loo_grads, "vimco": refs.vimco_grads, "arm": refs.arm_grads,
          "disarm": refs.disarm_grads, "rebar": refs.rebar_grads, "relax": refs.relax_grads}
    base, _, k = name.partition("-")
    if name.startswith("score-loo"):
        base, k = "score-loo", name.rsplit("-", 1)[1]
    if k:
        args = (int(k),)
    pyro.set_rng_seed(11)
    ref_loss = fn[base](sbn, x, N / B, *args)
    ref_params = [sbn.prior_logits, sbn.dec.weight, sbn.dec.bias, sbn.enc.weight, sbn.enc.bias]
    theirs = _grads(ref_params + extra_ref)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()),
                                   msg=f"{name}: tensor {i}")
