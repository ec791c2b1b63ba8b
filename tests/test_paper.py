"""Issue 10: paper-scale training (early stopping, best.pt, Burda's schedule, Adam options,
dynamic binarization), wake-sleep and Monte Carlo EM (the benchmarks' smoke modes:
tests/benchmarks/test_smoke.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import ppl_vae
import ppl_vae.training.loop as training
from ppl_vae import TrainConfig, train
from ppl_vae.commands.cli import main
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.io.checkpoint import load_checkpoint
from ppl_vae.training.schedules import BURDA_EPOCHS, burda_stages, learning_rate

CFG = dict(data="digits", latent_dims=(3,), hidden=(16,), batch_size=50, lr=3e-3)


# -- Burda's schedule and Adam options ---------------------------------------------------------
def test_burda_schedule_values_at_the_stage_boundaries():
    starts = [0, 1, 4, 13, 40, 121, 364, 1093]
    assert [s for s, _, _ in burda_stages()] == starts
    assert BURDA_EPOCHS == 3280 == starts[-1] + 3**7
    for i, start in enumerate(starts):
        expected = 1e-3 * 10 ** (-i / 7)
        assert learning_rate("burda", start, 1e-3) == pytest.approx(expected, rel=1e-12)
        if start:
            assert learning_rate("burda", start - 1, 1e-3) == pytest.approx(
                1e-3 * 10 ** (-(i - 1) / 7), rel=1e-12)
    assert learning_rate("burda", 3279, 1e-3) == pytest.approx(1e-4, rel=1e-12)
    assert learning_rate("constant", 3279, 2e-3) == 2e-3
    with pytest.raises(ConfigError, match="3280 epochs"):
        TrainConfig(schedule="burda", epochs=3281)
    with pytest.raises(ConfigError, match="unknown schedule"):
        TrainConfig(schedule="cosine")


@pytest.mark.parametrize("bad", ["0.9", "0.9,1.0", "a,b", "0.9,0.99,0.1"])
def test_bad_adam_betas_are_a_config_error(bad):
    with pytest.raises(ConfigError, match="adam_betas"):
        TrainConfig(adam_betas=bad)
    with pytest.raises(ConfigError, match="adam_eps"):
        TrainConfig(adam_eps=0)


def test_schedule_and_adam_options_reach_the_optimizer(tiny_digits, tmp_path):
    """The optimizer state saved after epoch e holds the lr of epoch e (0-based e - 1), and the
    Adam eps/betas given on the command line; a resumed run continues on the schedule."""
    from ppl_vae.commands.cli import build_parser
    from ppl_vae.commands.train import overrides_from

    args = build_parser().parse_args([
        "train", "--data", "digits", "--latent-dim", "3", "--hidden", "16", "--batch-size",
        "100", "--epochs", "4", "--schedule", "burda", "--adam-eps", "1e-4", "--adam-betas",
        "0.8,0.99", "--patience", "7", "--out", str(tmp_path)])
    over = overrides_from(args)
    assert over["adam_eps"] == 1e-4 and over["adam_betas"] == "0.8,0.99" and over["patience"] == 7
    train(out=tmp_path, dataset=tiny_digits, progress=False, reports=False, **over)
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7)) for g in groups)  # epoch 4: i=1
    assert all(g["eps"] == 1e-4 and tuple(g["betas"]) == (0.8, 0.99) for g in groups)
    train(out=tmp_path, resume=True, epochs=5, dataset=tiny_digits, progress=False, reports=False)
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-3 * 10 ** (-2 / 7)) for g in groups)  # epoch 5: i=2


# -- early stopping and best.pt ----------------------------------------------------------------
SCRIPT = [-50.0, -40.0, -45.0, -46.0, -30.0, -30.0]  # valid ELBO per epoch, scripted


@pytest.fixture
def scripted_run(tiny_digits, tmp_path, monkeypatch):
    """A run whose validation ELBOs are SCRIPT; records the weights after every epoch."""
    snapshots = []

    def fake_validate(loop, epoch):
        snapshots.append({k: v.clone() for k, v in loop.model.state_dict().items()})
        return SCRIPT[epoch]

    monkeypatch.setattr(training, "_validate", fake_validate)
    res = train(TrainConfig(**CFG, epochs=6, patience=2), out=tmp_path, dataset=tiny_digits,
                progress=False, reports=False)
    return res, snapshots, tmp_path


def test_early_stopping_keeps_the_best_epoch(scripted_run):
    res, snapshots, out = scripted_run
    assert res.metrics.epoch.tolist() == [1, 2, 3, 4]  # best at 2, then 2 epochs without gain
    assert res.stopped_early and res.best_epoch == 2
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "checkpoint.pt")
    assert best["epochs_done"] == 2 and last["epochs_done"] == 4
    assert best["best_epoch"] == last["best_epoch"] == 2
    for k, v in best["model"].items():
        assert torch.equal(v, snapshots[1][k]), k
    assert any(not torch.equal(v, snapshots[1][k]) for k, v in last["model"].items())
    assert set(best) == set(last)  # the same payload format
    # resuming an exhausted run trains nothing more
    again = train(out=out, resume=True, epochs=6, progress=False, reports=False)
    assert again.metrics.epoch.tolist() == [1, 2, 3, 4] and again.stopped_early


def test_patience_counts_from_the_end_of_the_warmup(tiny_digits, monkeypatch):
    monkeypatch.setattr(training, "_validate", lambda loop, epoch: SCRIPT[epoch])
    res = train(TrainConfig(**CFG, epochs=6, patience=2, kl_warmup_epochs=3),
                dataset=tiny_digits, progress=False, reports=False)
    assert res.metrics.epoch.tolist() == [1, 2, 3, 4, 5, 6] and not res.stopped_early
    assert res.best_epoch == 5  # the first of the tied best epochs


def test_best_pt_is_the_epoch_with_the_best_valid_elbo(tiny_digits, tmp_path):
    res = train(TrainConfig(**{**CFG, "lr": 0.03}, epochs=5), out=tmp_path, dataset=tiny_digits,
                progress=False, reports=False)
    best = int(res.metrics.valid_elbo.idxmax()) + 1
    assert load_checkpoint(tmp_path / "best.pt")["epochs_done"] == best == res.best_epoch
    run = ppl_vae.load_run(tmp_path, dataset=tiny_digits)
    x = run.split("valid")
    assert training.estimate_elbo(run.model, run.guide, x, seed=res.config.seed) == \
        pytest.approx(res.metrics.valid_elbo.max(), abs=1e-4)
    assert ppl_vae.load_run(tmp_path, checkpoint="last").checkpoint["epochs_done"] == 5
    with pytest.raises(ConfigError, match="checkpoint must be one of"):
        ppl_vae.load_run(tmp_path, checkpoint="first")


def test_evaluate_uses_best_unless_checkpoint_last(scripted_run, capsys):
    res, _, out = scripted_run
    argv = ["evaluate", "--run", str(out), "--estimator", "elbo", "--samples", "5", "--json",
            "--no-progress"]
    assert main(argv) == 0
    best = json.loads(capsys.readouterr().out)
    assert main(argv + ["--checkpoint", "last"]) == 0
    last = json.loads(capsys.readouterr().out)
    assert (best["checkpoint"], best["epochs_done"]) == ("best", 2)
    assert (last["checkpoint"], last["epochs_done"]) == ("last", 4)
    assert best["log_likelihood"] != last["log_likelihood"]


# -- dynamic binarization ----------------------------------------------------------------------
def test_grey_data_is_binarized_afresh_each_minibatch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    grey = {k: rng.uniform(0.2, 0.8, size=(n, 16)).astype(np.float32)
            for k, n in (("train", 40), ("valid", 10), ("test", 10))}
    path = tmp_path / "grey.npz"
    np.savez(path, **grey)
    seen = []
    orig = ppl_vae.infer.svi.SVI.step

    def spy(self, xb, **kw):
        seen.append(xb.clone())
        return orig(self, xb, **kw)

    monkeypatch.setattr(ppl_vae.infer.svi.SVI, "step", spy)
    res = train(data=str(path), latent_dims=(2,), hidden=(8,), batch_size=40, epochs=2,
                progress=False, reports=False)
    assert len(seen) == 2 and all(((s == 0) | (s == 1)).all() for s in seen)
    # the same 40 points in both epochs (one batch each, permuted): rows sorted by their grey
    # values differ between the two binarizations in many pixels
    assert 0.2 < (seen[0].sum() / seen[0].numel()).item() < 0.8
    assert not torch.equal(seen[0].sum(0), seen[1].sum(0))
    x_valid = res.dataset.split_for("valid", res.model.likelihood)
    assert torch.equal(x_valid, res.dataset.split_for("valid", res.model.likelihood))  # static
    assert ((x_valid == 0) | (x_valid == 1)).all()


def test_mnist_dynamic_without_the_files_is_a_clear_error(tmp_path):
    from ppl_vae.io.data import load_dataset

    with pytest.raises(DataError, match="mnist: not found under"):
        load_dataset("mnist-dynamic", root=tmp_path, download=False)


# -- wake-sleep --------------------------------------------------------------------------------
A_TRUE, B_TRUE, S_TRUE = 2.0, 1.0, 0.5


def lg_model(x=None, num_data=None, batch_size=None):
    """z ~ N(0, 1), x | z ~ N(a z + b, s^2), scalars; a, b learnable."""
    import pyro
    import pyro.distributions as dist

    a = pyro.param("a", torch.tensor(A_TRUE))
    b = pyro.param("b", torch.tensor(B_TRUE))
    n = x.shape[0] if x is not None else batch_size
    with pyro.plate("data", n, subsample_size=n if num_data is None else None):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        return pyro.sample("x", dist.Normal(a * z + b, S_TRUE), obs=x)


def lg_guide(x, num_data=None, batch_size=None):
    """q(z | x) = N(c x + d, e^2), e = exp(log_e)."""
    import pyro
    import pyro.distributions as dist

    c, d = pyro.param("c", torch.tensor(0.3)), pyro.param("d", torch.tensor(-0.2))
    log_e = pyro.param("log_e", torch.tensor(-0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(c * x + d, log_e.exp()))


def test_wake_sleep_gradients_match_the_closed_form():
    """Sleep-phi: -E_p[grad_phi log q(z|x)] over dreams (z, x) ~ p, in closed form for the
    linear-Gaussian pair; wake-theta: -E_q[grad_theta log p(x, z)] at fixed x."""
    import pyro

    from ppl_vae.infer.objectives import make_objective

    n = 40000
    x = A_TRUE * torch.randn(n) + B_TRUE + S_TRUE * torch.randn(n)
    obj = make_objective("ws")
    assert obj.can_infer_discrete
    obj.loss_and_grads(lg_model, lg_guide, x)
    grad = {k: pyro.param(k).unconstrained().grad / n for k in ("a", "b", "c", "d", "log_e")}
    a, b, s, c, d, e = A_TRUE, B_TRUE, S_TRUE, 0.3, -0.2, math.exp(-0.5)
    # sleep-phi, expectations under the model's joint: E z = 0, E x = b, E zx = a,
    # E x^2 = a^2 + s^2 + b^2, E (z - c x - d)^2 = (1 - c a)^2 + c^2 s^2 + (c b + d)^2
    sleep = {"d": -(0 - c * b - d) / e**2,
             "c": -(a - c * (a * a + s * s + b * b) - d * b) / e**2,
             "log_e": -(-1 + ((1 - c * a) ** 2 + c * c * s * s + (c * b + d) ** 2) / e**2)}
    for k, v in sleep.items():
        assert grad[k].item() == pytest.approx(v, abs=0.05 * max(1.0, abs(v))), k
    # wake-theta, z ~ q(z|x): E[(x - a z - b)/s^2] and E[(x - a z - b) z / s^2]
    m = c * x + d
    wake_b = -((x - a * m - b) / s**2).mean()
    wake_a = -(((x - b) * m - a * (m * m + e * e)) / s**2).mean()
    assert grad["b"].item() == pytest.approx(wake_b.item(), abs=0.05 * max(1, abs(wake_b)))
    assert grad["a"].item() == pytest.approx(wake_a.item(), abs=0.05 * max(1, abs(wake_a)))
    # and the reported loss is the -ELBO, whose exact value is available here
    elbo_loss = obj.loss(lg_model, lg_guide, x) / n
    assert math.isfinite(elbo_loss)


def test_wake_sleep_trains_a_vae(tiny_digits):
    res = train(TrainConfig(**{**CFG, "lr": 1e-2}, objective="ws", epochs=4),
                dataset=tiny_digits, progress=False, reports=False)
    assert res.metrics.valid_elbo.iloc[-1] > res.metrics.valid_elbo.iloc[0] + 1.0


# -- Monte Carlo EM ----------------------------------------------------------------------------
def test_mcem_moves_theta_towards_the_maximum_likelihood_value():
    """x ~ N(b, a^2 + s^2) marginally, s fixed: the MLE is b = mean(x), a^2 = var(x) - s^2."""
    import pyro

    from ppl_vae.infer.mcem import MonteCarloEM

    torch.manual_seed(0)
    n = 100
    x = A_TRUE * torch.randn(n) + B_TRUE + S_TRUE * torch.randn(n)
    b_mle, a2_mle = x.mean().item(), x.var(unbiased=False).item() - S_TRUE**2
    pyro.clear_param_store()
    pyro.param("a", torch.tensor(0.5))
    pyro.param("b", torch.tensor(-1.0))
    em = MonteCarloEM(lg_model, num_data=n, lr=0.1, m_steps=5, num_leapfrog=10, warmup=3)

    def gap():
        a, b = pyro.param("a").item(), pyro.param("b").item()
        return abs(b - b_mle), abs(a * a - a2_mle)

    before = gap()
    for _ in range(20):
        em.step(x, torch.arange(n))
    after = gap()
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)
    assert em.seen.all() and em.state["z"].shape == (n,)


def test_mcem_on_a_vae_trains_the_module_and_leaves_the_param_store_alone(tiny_digits):
    """HMC's tracing registers a PyroModule's weights in Pyro's global store; MonteCarloEM
    removes them, so a later model with the same names trains its own weights."""
    import pyro

    from ppl_vae.infer.mcem import MonteCarloEM
    from ppl_vae.training.builders import build_model_and_guide

    model, _ = build_model_and_guide(TrainConfig(**CFG), tiny_digits.x_dim)
    before = model.decoder[0].weight.detach().clone()
    em = MonteCarloEM(model, num_data=200, warmup=2)
    x = torch.bernoulli(tiny_digits.train[:50])
    em.step(x, torch.arange(50))
    assert len(pyro.get_param_store()) == 0
    assert not torch.equal(model.decoder[0].weight, before)
    assert em.state["z"].shape == (200, 3) and em.seen.sum() == 50
