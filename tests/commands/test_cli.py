"""The ppl-vae command line, end to end, and its error messages."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from ppl_vae.commands.cli import main


def test_train_then_resume_then_sample(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", "digits", "--latent-dim", "2", "--hidden", "32,32",
               "--likelihood", "bernoulli", "--objective", "trace", "--epochs", "2",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "valid ELBO" in capsys.readouterr().out
    for name in ("checkpoint.pt", "metrics.csv", "samples.png", "reconstructions.png"):
        assert (out / name).is_file()
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    df = pd.read_csv(out / "metrics.csv")
    assert list(df.columns) == ["epoch", "train_elbo", "valid_elbo", "seconds"] and len(df) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["latent_dims"] == [2] and config["hidden"] == [32, 32]
    # resume needs no other flags: the checkpoint holds the config
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 0
    assert len(pd.read_csv(out / "metrics.csv")) == 3
    assert main(["sample", "--run", str(out), "-n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,message", [
    (["--objective", "bogus"], "unknown objective 'bogus'"),
    (["--likelihood", "poisson"], "unknown likelihood 'poisson'"),
    (["--hidden", "12,x"], "hidden must be a comma-separated list of integers"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--latent-dim", "0"], "--latent-dim must be one or more positive integers"),
    (["--latent-dims", "4,0"], "--latent-dims must be one or more positive integers"),
    (["--adam-betas", "2"], "--adam-betas must be two numbers"),
    (["--data", "nowhere.npz"], "nowhere.npz: no such file"),
])
def test_bad_options_give_one_clear_line(tmp_path, capsys, argv, message):
    rc = main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err


def test_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--resume"]) == 2
    assert "no checkpoint there" in capsys.readouterr().err


def test_console_script_and_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ppl_vae", "train", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--latent-dims" in r.stdout


def test_models_and_guides_are_not_top_level_packages(tmp_path):
    code = ("import importlib.util as u, ppl_vae.models, ppl_vae.guides;"
            "print(u.find_spec('models'), u.find_spec('guides'),"
            " ppl_vae.models.VAEModel.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "None", "ppl_vae.models.vae"]
