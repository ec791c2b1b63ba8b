"""Early stopping (``patience``, counted from the end of the KL warm-up) and ``best.pt``, the
checkpoint of the epoch with the best validation ELBO, which ``load_run`` and the commands use
unless asked for the last one."""

from __future__ import annotations

import json

import pytest
import torch

import ppl_vae
import ppl_vae.training.loop as training
from ppl_vae import TrainConfig, train
from ppl_vae.commands.cli import main
from ppl_vae.errors import ConfigError
from ppl_vae.io.checkpoint import load_checkpoint

CFG = dict(data="digits", latent_dims=(3,), hidden=(16,), batch_size=50, lr=3e-3)
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
