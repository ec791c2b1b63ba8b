"""Exact resume at every boundary: interrupted anywhere (mid-step, at the epoch boundary, during
validation, during the checkpoint write) by SIGINT, SIGTERM or a ``KeyboardInterrupt`` that
cannot wait, then resumed, a run has the same metrics and weights, bit for bit, as one that
never stopped; and the files on disk agree with each other after the interrupt."""

import os
import signal

import pandas as pd
import pytest
import torch

from ppl_vae import TrainConfig, train
from ppl_vae.infer.svi import SVI
from ppl_vae.io.checkpoint import load_checkpoint
from ppl_vae.training import loop as loop_module
from ppl_vae.training.callbacks import Callback

CFG = dict(data="digits", latent_dims=(2,), hidden=(32,), batch_size=20, lr=3e-3, epochs=3)
BOUNDARIES = ("mid-step", "epoch-boundary", "validation", "checkpoint-write", "before-metrics")
HOWS = ("sigint", "sigterm", "raise")


def _interrupt(how):
    if how == "raise":
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGINT if how == "sigint" else signal.SIGTERM)


def _counting(fn, at, how, after=False):
    """``fn`` that interrupts on its ``at``-th call (before it runs, or after with ``after``)."""
    calls = {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if calls["n"] == at and not after:
            _interrupt(how)
        out = fn(*a, **k)
        if calls["n"] == at and after:
            _interrupt(how)
        return out

    return wrapped


class _InterruptAfterEpoch(Callback):
    def __init__(self, epoch, how):
        self.epoch, self.how = epoch, how

    def on_epoch_end(self, epoch, row, model, guide):
        if epoch == self.epoch:
            _interrupt(self.how)


def _state(run_dir, name="checkpoint.pt"):
    ck = load_checkpoint(run_dir / name)
    return ck


def _same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    from ppl_vae.io.data import Dataset

    data = Dataset("digits", digits.train[:200], digits.valid[:50], digits.test[:50],
                   digits.image_shape)
    out = tmp_path_factory.mktemp("reference")
    train(TrainConfig(**CFG), out=out, dataset=data, progress=False, reports=False)
    return data, out


def _metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv")[["epoch", "train_elbo", "valid_elbo"]]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_resume_is_exact_at_every_boundary(reference, tmp_path, monkeypatch, boundary, how):
    data, ref = reference
    callbacks = []
    if boundary == "mid-step":  # inside step 15 (epoch 2): a signal waits for the step's end
        monkeypatch.setattr(SVI, "step", _counting(SVI.step, 15, how, after=True))
    elif boundary == "epoch-boundary":  # epoch 1 checkpointed, epoch 2 not begun
        callbacks = [_InterruptAfterEpoch(1, how)]
    elif boundary == "validation":  # validating epoch 2
        monkeypatch.setattr(loop_module, "estimate_elbo",
                            _counting(loop_module.estimate_elbo, 2, how))
    elif boundary == "checkpoint-write":  # epoch 2: best.pt written, checkpoint.pt not yet
        monkeypatch.setattr(loop_module, "save_checkpoint",
                            _counting(loop_module.save_checkpoint, 4, how))
    else:  # epoch 2: checkpoint.pt written, metrics.csv not yet
        monkeypatch.setattr(loop_module, "_write_metrics",
                            _counting(loop_module._write_metrics, 2, how))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**CFG), out=tmp_path, dataset=data, progress=False, reports=False,
              callbacks=callbacks)
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path)
    # the files on disk agree: metrics.csv is the checkpoint's own record
    assert _metrics(tmp_path).epoch.tolist() == [r["epoch"] for r in ck["metrics"]]
    assert len(ck["metrics"]) == ck["epochs_done"]
    resumed = train(out=tmp_path, resume=True, dataset=data, progress=False, reports=False)
    assert resumed.metrics.epoch.tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(_metrics(tmp_path), _metrics(ref), check_exact=True)
    for name in ("checkpoint.pt", "best.pt"):
        a, b = _state(tmp_path, name), _state(ref, name)
        for key in ("model", "guide", "optimizer", "epochs_done", "best_epoch", "checkpoint_id"):
            _same_tensors(a[key], b[key], f"{name}:{key}")
        assert [r["valid_elbo"] for r in a["metrics"]] == [r["valid_elbo"] for r in b["metrics"]]


def _objectives():
    from ppl_vae import available_objectives

    return available_objectives()


@pytest.mark.parametrize("objective", _objectives())
def test_every_objective_resumes_exactly(reference, tmp_path, monkeypatch, objective):
    """What an objective keeps between steps (decaying-average baselines, the neural baseline,
    Pyro's guessed plate nesting) survives the checkpoint: SIGINT mid-epoch, then resume."""
    data, _ = reference
    cfg = {**CFG, "epochs": 2, "objective": objective}
    ref = train(TrainConfig(**cfg), dataset=data, progress=False, reports=False)
    monkeypatch.setattr(SVI, "step", _counting(SVI.step, 13, "sigint", after=True))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg), out=tmp_path, dataset=data, progress=False, reports=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["position"]["step"] == 3
    resumed = train(out=tmp_path, resume=True, dataset=data, progress=False, reports=False)
    cols = ["epoch", "train_elbo", "valid_elbo"]
    pd.testing.assert_frame_equal(resumed.metrics[cols], ref.metrics[cols], check_exact=True)
