"""Training: improvement, determinism, resume, checkpoints, divergence, interruption."""

import math
import os
import signal

import pytest
import torch

import ppl_vae
from ppl_vae import CheckpointError, TrainConfig, TrainingDivergedError, train
from ppl_vae.infer.svi import SVI
from ppl_vae.io.checkpoint import load_checkpoint, save_checkpoint
from ppl_vae.training.loop import estimate_elbo

CFG = dict(data="digits", latent_dims=(4,), hidden=(64,), batch_size=20, lr=3e-3)


def test_training_improves_validation_elbo_by_ten_nats(digits, tmp_path):
    """From an untrained model (~ -44 nats = 64 log 2 for p=1/2 pixels) to ~ -27 in 4 epochs."""
    torch.manual_seed(0)
    model, guide = ppl_vae.build_model_and_guide(TrainConfig(**CFG), digits.x_dim)
    x_valid = digits.split_for("valid", model.likelihood)
    before = estimate_elbo(model, guide, x_valid)
    res = train(TrainConfig(**CFG, epochs=4), out=tmp_path, dataset=digits, progress=False)
    after = res.metrics.valid_elbo.iloc[-1]
    assert after - before > 10.0, (before, after)
    assert list(res.metrics.columns) == ["epoch", "train_elbo", "valid_elbo", "seconds"]
    assert res.metrics.epoch.tolist() == [1, 2, 3, 4]
    for name in ("checkpoint.pt", "metrics.csv", "samples.png", "reconstructions.png",
                 "config.json"):
        assert (tmp_path / name).is_file(), name


def test_same_seed_same_numbers_different_seed_different(tiny_digits):
    runs = [train(TrainConfig(**CFG, epochs=2, seed=s), dataset=tiny_digits, progress=False)
            for s in (5, 5, 6)]
    a, b, c = (r.metrics[["train_elbo", "valid_elbo"]].to_numpy() for r in runs)
    assert (a == b).all()
    assert not (a == c).all()


def test_resume_continues_exactly(tiny_digits, tmp_path):
    full = train(TrainConfig(**CFG, epochs=3), dataset=tiny_digits, progress=False)
    train(TrainConfig(**CFG, epochs=1), out=tmp_path, dataset=tiny_digits, progress=False)
    resumed = train(out=tmp_path, resume=True, epochs=3, dataset=tiny_digits, progress=False)
    assert resumed.metrics.epoch.tolist() == [1, 2, 3]
    assert resumed.metrics.valid_elbo.tolist() == pytest.approx(
        full.metrics.valid_elbo.tolist(), abs=1e-4)


def test_resume_with_incompatible_config_is_refused(tiny_digits, tmp_path):
    train(TrainConfig(**CFG, epochs=1), out=tmp_path, dataset=tiny_digits, progress=False)
    with pytest.raises(CheckpointError, match=r"incompatible config \(latent_dims"):
        train(out=tmp_path, resume=True, latent_dims=(8,), epochs=2, dataset=tiny_digits,
              progress=False)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_digits, tmp_path,
                                                                 monkeypatch):
    train(TrainConfig(**CFG, epochs=1), out=tmp_path, dataset=tiny_digits, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    calls = {"n": 0}
    real_step = SVI.step

    def flaky_step(self, *a, **k):
        calls["n"] += 1
        return float("nan") if calls["n"] == 3 else real_step(self, *a, **k)

    monkeypatch.setattr(SVI, "step", flaky_step)
    with pytest.raises(TrainingDivergedError, match=r"nan at epoch 2, step 3 \(global step 13\)"):
        train(out=tmp_path, resume=True, epochs=3, dataset=tiny_digits, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(tmp_path)["epochs_done"] == 1


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "raise"])
def test_interrupt_saves_checkpoint_and_resume_finishes(tiny_digits, tmp_path, monkeypatch, how):
    calls = {"n": 0}
    real_step = SVI.step

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 15:  # mid epoch 2 (10 steps per epoch)
            if how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM if how == "sigterm" else signal.SIGINT)
        return real_step(self, *a, **k)

    monkeypatch.setattr(SVI, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**CFG, epochs=3), out=tmp_path, dataset=tiny_digits, progress=False)
    ck = load_checkpoint(tmp_path)
    assert ck["epochs_done"] == 1
    if how == "raise":  # an interrupt that cannot wait: the last checkpoint stays as it was
        assert not ck["interrupted"] and ck["position"] is None
    else:  # a signal: the step ends, then its position in epoch 2 is saved
        assert ck["interrupted"] and ck["position"]["step"] == 5
    monkeypatch.setattr(SVI, "step", real_step)
    res = train(out=tmp_path, resume=True, dataset=tiny_digits, progress=False)
    assert res.metrics.epoch.tolist() == [1, 2, 3]
    assert not load_checkpoint(tmp_path)["interrupted"]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    good = {"config": {}, "model": {"w": torch.ones(2)}, "guide": {}}
    save_checkpoint(path, good)
    before = path.read_bytes()

    def exploding_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, good)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "not-ours"])
def test_corrupt_checkpoint_gives_clear_error(tiny_digits, tmp_path, damage):
    train(TrainConfig(**CFG, epochs=1), out=tmp_path, dataset=tiny_digits, progress=False)
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 definitely not a checkpoint" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.ones(3)}, path)
    expected = "not a ppl_vae checkpoint" if damage == "not-ours" else "corrupt or truncated"
    with pytest.raises(CheckpointError, match=expected):
        ppl_vae.load_run(tmp_path, checkpoint="last")
    with pytest.raises(CheckpointError):
        train(out=tmp_path, resume=True, dataset=tiny_digits, progress=False)


def test_checkpoint_weights_that_do_not_fit_the_config(tiny_digits, tmp_path):
    train(TrainConfig(**CFG, epochs=1), out=tmp_path, dataset=tiny_digits, progress=False)
    ck = load_checkpoint(tmp_path)
    ck["config"]["hidden"] = [32]
    save_checkpoint(tmp_path / "checkpoint.pt", {k: v for k, v in ck.items()
                                                 if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        ppl_vae.load_run(tmp_path, checkpoint="last")


def test_load_run_rebuilds_everything_from_the_checkpoint(tiny_digits, tmp_path):
    res = train(TrainConfig(**CFG, epochs=1, likelihood="gaussian"), out=tmp_path,
                dataset=tiny_digits, progress=False)
    run = ppl_vae.load_run(tmp_path)
    assert run.config == res.config
    x = tiny_digits.valid
    assert estimate_elbo(run.model, run.guide, x) == pytest.approx(
        estimate_elbo(res.model, res.guide, x), abs=1e-5)


@pytest.mark.parametrize("objective", ["meanfield", "tracegraph", "iwae"])
def test_every_training_objective_trains(tiny_digits, objective):
    res = train(TrainConfig(**CFG, epochs=2, objective=objective, particles=2),
                dataset=tiny_digits, progress=False)
    assert all(math.isfinite(v) for v in res.metrics.valid_elbo)


def test_scale_latents_handler_weights_only_latent_sites():
    """Under ScaleLatents(beta): log p(x|z) + beta * log p(z), observed site untouched."""
    from pyro import poutine

    from ppl_vae import ScaleLatents
    from ppl_vae.models import VAEModel

    model = VAEModel(6, 2, hidden=(5,))
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    tr = poutine.trace(ScaleLatents(0.25)(model)).get_trace(x)
    tr.compute_log_prob()
    z, xs = tr.nodes["z"], tr.nodes["x"]
    expected = xs["unscaled_log_prob"].sum() + 0.25 * z["unscaled_log_prob"].sum()
    assert torch.allclose(tr.log_prob_sum(), expected)


def test_kl_warmup_trains_the_annealed_bound(tiny_digits):
    """With beta ~ 0 the training bound E log p(x|z) - beta KL sits far above the true ELBO
    (validation), while without warm-up the two agree to within the train/valid gap."""
    plain = train(TrainConfig(**CFG, epochs=3), dataset=tiny_digits, progress=False).metrics
    warm = train(TrainConfig(**CFG, epochs=3, kl_warmup_epochs=100), dataset=tiny_digits,
                 progress=False).metrics
    assert (warm.train_elbo - warm.valid_elbo).iloc[-1] > 4.0
    assert (plain.train_elbo - plain.valid_elbo).iloc[-1] < 1.0
