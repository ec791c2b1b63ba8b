"""Issue 10: paper-scale training (early stopping, best.pt, Burda's schedule, Adam options,
dynamic binarization), wake-sleep, Monte Carlo EM, and the smoke modes of the paper benchmarks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import ppl_vae
import ppl_vae.training as training
from ppl_vae import TrainConfig, train
from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.schedules import BURDA_EPOCHS, burda_stages, learning_rate

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
    assert main(["train", "--data", "digits", "--latent-dim", "3", "--hidden", "16",
                 "--batch-size", "400", "--epochs", "4", "--schedule", "burda",
                 "--adam-eps", "1e-4", "--adam-betas", "0.8,0.99", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    groups = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]
    assert all(g["lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7)) for g in groups)  # epoch 4: i=1
    assert all(g["eps"] == 1e-4 and tuple(g["betas"]) == (0.8, 0.99) for g in groups)
    train(out=tmp_path, resume=True, epochs=5, progress=False, plots=False)
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
                progress=False, plots=False)
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
    again = train(out=out, resume=True, epochs=6, progress=False, plots=False)
    assert again.metrics.epoch.tolist() == [1, 2, 3, 4] and again.stopped_early


def test_patience_counts_from_the_end_of_the_warmup(tiny_digits, monkeypatch):
    monkeypatch.setattr(training, "_validate", lambda loop, epoch: SCRIPT[epoch])
    res = train(TrainConfig(**CFG, epochs=6, patience=2, kl_warmup_epochs=3),
                dataset=tiny_digits, progress=False, plots=False)
    assert res.metrics.epoch.tolist() == [1, 2, 3, 4, 5, 6] and not res.stopped_early
    assert res.best_epoch == 5  # the first of the tied best epochs


def test_best_pt_is_the_epoch_with_the_best_valid_elbo(tiny_digits, tmp_path):
    res = train(TrainConfig(**{**CFG, "lr": 0.03}, epochs=5), out=tmp_path, dataset=tiny_digits,
                progress=False, plots=False)
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
    orig = ppl_vae.svi.SVI.step

    def spy(self, xb, **kw):
        seen.append(xb.clone())
        return orig(self, xb, **kw)

    monkeypatch.setattr(ppl_vae.svi.SVI, "step", spy)
    res = train(data=str(path), latent_dims=(2,), hidden=(8,), batch_size=40, epochs=2,
                progress=False, plots=False)
    assert len(seen) == 2 and all(((s == 0) | (s == 1)).all() for s in seen)
    # the same 40 points in both epochs (one batch each, permuted): rows sorted by their grey
    # values differ between the two binarizations in many pixels
    assert 0.2 < (seen[0].sum() / seen[0].numel()).item() < 0.8
    assert not torch.equal(seen[0].sum(0), seen[1].sum(0))
    x_valid = res.dataset.split_for("valid", res.model.likelihood)
    assert torch.equal(x_valid, res.dataset.split_for("valid", res.model.likelihood))  # static
    assert ((x_valid == 0) | (x_valid == 1)).all()


def test_mnist_dynamic_without_the_files_is_a_clear_error(tmp_path):
    from ppl_vae.data import load_dataset

    with pytest.raises(DataError, match="mnist: not found under"):
        load_dataset("mnist-dynamic", root=tmp_path, download=False)
