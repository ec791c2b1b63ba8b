"""Run directories are guarded: a finished run is not overwritten silently, ``--overwrite``
archives everything derived from the old model, a lock keeps a second process out, and every
derived file names the checkpoint it came from."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from ppl_vae import TrainConfig, train
from ppl_vae.commands.cli import main
from ppl_vae.io.checkpoint import load_checkpoint
from ppl_vae.io.provenance import clear, read_png
from ppl_vae.training.runs import RunExistsError, RunLock, RunLockedError

CFG = dict(data="digits", latent_dims=(2,), hidden=(16,), batch_size=100, epochs=1)
TINY = ["--data", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "100",
        "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _no_declared_sources():
    clear()
    yield
    clear()


def _train(out, data, **kw):
    return train(TrainConfig(**CFG), out=out, dataset=data, progress=False, reports=False, **kw)


def test_training_into_a_run_is_refused_in_python(tiny_digits, tmp_path):
    _train(tmp_path, tiny_digits)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunExistsError, match=r"already holds a run \(1 epoch in metrics.csv\); "
                                             r"use --resume, --overwrite, or another --out"):
        _train(tmp_path, tiny_digits)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert not (tmp_path / ".lock").exists()  # the refused call released its lock


def test_cli_refuses_with_one_line_and_overwrite_archives_everything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", out]) == 0
    old_id = load_checkpoint(out)["checkpoint_id"]
    (out / "evaluation.csv").write_text("run_id,log_likelihood\nsomething,-1.0\n")
    capsys.readouterr()
    assert main(["train", *TINY, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppl-vae train: error: ")
    assert err.strip().endswith("use --resume, --overwrite, or another --out")
    assert main(["train", *TINY, "--seed", "1", "--out", out, "--overwrite"]) == 0
    assert not (out / "evaluation.csv").exists()
    (archive,) = out.glob(".old-*")
    assert {"checkpoint.pt", "best.pt", "metrics.csv", "evaluation.csv", "samples.png",
            "reconstructions.png", "config.json"} <= {p.name for p in archive.iterdir()}
    assert load_checkpoint(archive / "checkpoint.pt")["checkpoint_id"] == old_id
    assert load_checkpoint(out)["checkpoint_id"] != old_id
    assert main(["train", "--out", out, "--resume", "--overwrite"]) == 2


def test_a_second_process_is_locked_out_and_a_stale_lock_is_taken_over(tiny_digits, tmp_path):
    with RunLock(tmp_path):  # another holder of the lock, as a second process would be
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}.*in use|in use.*pid"):
            _train(tmp_path, tiny_digits)
    assert not (tmp_path / "checkpoint.pt").exists()
    # a lock file left by a process that died (its flock went with it): taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / ".lock").write_text(dead + "\n")
    _train(tmp_path, tiny_digits)
    assert load_checkpoint(tmp_path)["epochs_done"] == 1 and not (tmp_path / ".lock").exists()


def test_lock_between_processes(tmp_path):
    code = ("import sys, time; from ppl_vae.training.runs import RunLock; "
            "l = RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(tmp_path).acquire().release()  # the killed holder's lock is free again


def test_derived_files_name_their_checkpoint_and_a_foreign_csv_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "0"), (b, "1")):
        assert main(["train", *TINY, "--seed", seed, "--out", out]) == 0
    ck = load_checkpoint(a / "best.pt")
    assert ck["run_id"] and ck["checkpoint_id"]
    capsys.readouterr()
    argv = ["evaluate", "--run", a, "--estimator", "is", "--samples", "5", "--limit", "7",
            "--no-progress", "--json"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["run_id"], row["checkpoint_id"]) == (ck["run_id"], ck["checkpoint_id"])
    df = pd.read_csv(a / "evaluation.csv", dtype=str)
    assert df.loc[0, "checkpoint_id"] == ck["checkpoint_id"]
    assert df.loc[0, "limit"] == "7" and df.loc[0, "n"] == "7"  # integers stay integers
    # the PNGs of train and of a command carry their checkpoint
    assert read_png(a / "samples.png")["run_id"] == ck["run_id"]
    assert main(["sample", "--run", a, "-n", "4", "--out", tmp_path / "s.png"]) == 0
    assert read_png(tmp_path / "s.png")["checkpoint_id"] == ck["checkpoint_id"]
    # an evaluation.csv of another run is not appended to
    shutil.copy(a / "evaluation.csv", b / "evaluation.csv")
    capsys.readouterr()
    assert main([*argv[:2], b, *argv[3:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds rows of another run" in err
    assert len(pd.read_csv(b / "evaluation.csv")) == 1


def test_the_readme_python_snippet_does_not_train_into_the_cli_main_job():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    cli = re.search(r"--epochs 30 --out (\S+)\s+# 3\. the main job", text).group(1)
    python = re.findall(r'train\(TrainConfig\([^\n]*out="([^"]+)"', text)
    assert python and cli not in python


@pytest.mark.parametrize("command", [["evaluate", "--estimator", "is", "--samples", "2"],
                                     ["grad-variance"], ["sample", "--out", "x.png"]])
def test_one_wording_for_a_missing_run_directory(tmp_path, capsys, command):
    rc = main([command[0], "--run", tmp_path / "nope", *command[1:]])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nope: no such run directory" in err, err


def test_train_json_names_its_run_and_checkpoint(tmp_path, capsys):
    assert main(["train", *TINY, "--out", tmp_path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ck = load_checkpoint(tmp_path)
    assert (out["run_id"], out["checkpoint_id"]) == (ck["run_id"], ck["checkpoint_id"])


def test_train_figures_say_their_split(tiny_digits, tmp_path, monkeypatch):
    from ppl_vae.io import plots

    titles, real = {}, plots.save_image_grid

    def spy(images, shape, path, *a, **k):
        titles[path.name] = k.get("title")
        return real(images, shape, path, *a, **k)

    monkeypatch.setattr(plots, "save_image_grid", spy)
    train(TrainConfig(**CFG), out=tmp_path, dataset=tiny_digits, progress=False)
    assert "valid split" in titles["reconstructions.png"]
    assert "p(z)" in titles["samples.png"]
