"""Faults during training: a full disk or a read-only directory while a checkpoint is written,
SIGKILL at random points, a corrupted ``best.pt``. None of them leaves an unloadable run."""

import errno
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import pandas as pd
import pytest

import ppl_vae
from ppl_vae import CheckpointError, TrainConfig, train
from ppl_vae.commands.cli import main
from ppl_vae.errors import PplVaeWarning
from ppl_vae.io import checkpoint as checkpoint_module
from ppl_vae.io.checkpoint import load_checkpoint

CFG = dict(data="digits", latent_dims=(2,), hidden=(16,), batch_size=50, epochs=3)


def _train(out, data, **kw):
    return train(TrainConfig(**CFG), out=out, dataset=data, progress=False, reports=False, **kw)


def _is_checkpoint(name: str) -> bool:
    return ".pt." in name


def _fail_checkpoint_fsync(monkeypatch, exc):
    """``os.fsync`` of a checkpoint's temporary file raises ``exc`` (the disk is full)."""
    real = os.fsync

    def failing(fd):
        if _is_checkpoint(os.readlink(f"/proc/self/fd/{fd}")):
            raise exc
        return real(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", failing)


def _fail_checkpoint_mkstemp(monkeypatch, exc):
    """Creating a checkpoint's temporary file raises ``exc`` (the directory is read-only)."""
    real = tempfile.mkstemp

    def failing(*a, **k):
        if _is_checkpoint(k.get("prefix", "") + "."):
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkstemp", failing)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("fault", ["enospc", "read-only"])
def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny_digits, tmp_path, monkeypatch,
                                                          fault):
    _train(tmp_path, tiny_digits, epochs=1)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    if fault == "enospc":  # the disk fills up while epoch 2's checkpoint is flushed
        _fail_checkpoint_fsync(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        said = "No space left on device"
    else:  # the directory turns read-only (faked: root writes through chmod)
        _fail_checkpoint_mkstemp(monkeypatch,
                                 PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        said = "Permission denied"
    with pytest.raises(CheckpointError) as info:
        train(out=tmp_path, resume=True, epochs=3, dataset=tiny_digits, progress=False,
              reports=False)
    message = str(info.value)
    assert "\n" not in message and said in message
    assert "checkpoint.pt (1 epochs) is kept and loadable" in message
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(tmp_path)["epochs_done"] == 1
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    res = train(out=tmp_path, resume=True, epochs=3, dataset=tiny_digits, progress=False,
                reports=False)  # space again: the run goes on
    assert res.metrics.epoch.tolist() == [1, 2, 3]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_disk_full_on_the_command_line_is_one_line(tmp_path, capsys, monkeypatch):
    _fail_checkpoint_fsync(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    rc = main(["train", "--data", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs",
               "1", "--batch-size", "200", "--no-progress", "--out", tmp_path / "r"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "No space left on device" in err and "no checkpoint was written yet" in err


def test_a_corrupt_best_falls_back_to_the_last_checkpoint_with_a_warning(tiny_digits, tmp_path,
                                                                         capsys):
    _train(tmp_path, tiny_digits, epochs=2)
    (tmp_path / "best.pt").write_bytes(b"\x00 not a checkpoint")
    with pytest.warns(PplVaeWarning, match=r"best.pt: corrupt.*using checkpoint.pt"):
        run = ppl_vae.load_run(tmp_path)
    assert run.path.name == "checkpoint.pt" and run.checkpoint["epochs_done"] == 2
    with warnings.catch_warnings():  # shown as Python shows it outside pytest
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(msg, cat, fn, ln, line))
        assert main(["sample", "--run", tmp_path, "-n", "4", "--out", tmp_path / "s.png"]) == 0
    err = capsys.readouterr().err
    warning = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warning) == 1 and warning[0].startswith("ppl-vae sample: warning: "), err
    (tmp_path / "checkpoint.pt").write_bytes(b"")  # both unreadable: one clear error
    with pytest.raises(CheckpointError, match="checkpoint.pt: corrupt or truncated"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ppl_vae.load_run(tmp_path)


TRAIN = ["--data", "digits", "--latent-dim", "2", "--hidden", "8", "--batch-size", "200",
         "--no-progress"]


def _command(out, epochs):
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    return [sys.executable, "-m", "ppl_vae", "train", *TRAIN, "--epochs", str(epochs), "--out",
            str(out), *resume]


def _check_loadable(out):
    if not (out / "checkpoint.pt").exists():
        return
    ck = load_checkpoint(out)  # never half-written
    ppl_vae.load_run(out, checkpoint="last")
    if (out / "best.pt").exists():
        load_checkpoint(out / "best.pt")
    if (out / "metrics.csv").exists():  # written after the checkpoint: equal, or one behind
        rows = pd.read_csv(out / "metrics.csv").epoch.tolist()
        record = [r["epoch"] for r in ck["metrics"]]
        assert rows in (record, record[:-1]), (rows, record)


def _wait_for_training(proc, out, launched):
    """Until the process has written config.json (its imports and data loading are over)."""
    while proc.poll() is None:
        try:
            if (out / "config.json").stat().st_mtime >= launched:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def _kill_loop(tmp_path, digits, kills, seed, epochs):
    """Train ``epochs`` epochs in a subprocess SIGKILLed ``kills`` times at random points of
    its training (resumed after each kill); every kill leaves a loadable run, and the finished
    run's metrics equal, bit for bit, those of an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1",
           "PPL_VAE_TEST_THREADS": "1"}
    out = tmp_path / "killed"
    out.mkdir()
    rng = random.Random(seed)
    killed = 0
    while True:
        launched = time.time() - 1.0  # file times may be coarse
        proc = subprocess.Popen(_command(out, epochs), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if killed < kills:
            _wait_for_training(proc, out, launched)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL: no handler runs
                killed += 1
        err = proc.communicate()[1].decode()
        _check_loadable(out)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(data="digits", latent_dims=(2,), hidden=(8,), batch_size=200, epochs=epochs,
                    dataset=digits, progress=False, reports=False)
    finally:
        torch.set_num_threads(threads)
    cols = ["epoch", "train_elbo", "valid_elbo"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv")[cols], ref.metrics[cols],
                                  check_exact=True)
    return killed


def test_sigkill_at_random_points_never_leaves_an_unloadable_run(tmp_path, digits):
    assert _kill_loop(tmp_path, digits, kills=3, seed=0, epochs=4) == 3


@pytest.mark.slow
def test_sigkill_twenty_times(tmp_path, digits):
    assert _kill_loop(tmp_path, digits, kills=20, seed=1, epochs=60) == 20
