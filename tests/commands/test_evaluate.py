"""``ppl-vae evaluate`` on a tiny run trained on the embedded digits data."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import torch

from ppl_vae.commands.cli import main

REQUIRED_KEYS = {"estimator", "num_samples", "n", "log_likelihood", "stderr", "bits_per_dim",
                 "ess_mean", "pareto_k_max", "seconds"}
FAST = {  # per estimator: small K (and a short AIS) so that each call takes well under a second
    "elbo": ["--samples", "20"],
    "naive": ["--samples", "50"],
    "is": ["--samples", "50"],
    "ais": ["--samples", "4", "--anneal-steps", "5", "--leapfrog", "2"],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine: one thread is much faster
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from ppl_vae.training.loop import train

    out = tmp_path_factory.mktemp("runs") / "digits-tiny"
    train(data="digits", epochs=1, hidden=(16,), latent_dims=(2,), batch_size=256, out=out,
          progress=False)
    return out


@pytest.fixture
def run_dir(trained_run, tmp_path):
    """A private copy of the trained run, so that evaluation.csv starts empty in every test."""
    d = tmp_path / "run"
    d.mkdir()
    for name in ("checkpoint.pt", "config.json"):
        shutil.copy(trained_run / name, d / name)
    return d


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # exactly one line: one JSON object
    return json.loads(out)


@pytest.mark.parametrize("estimator", ["elbo", "naive", "is", "ais"])
def test_json_is_one_object_with_the_required_keys(run_dir, capsys, estimator):
    row = _json(capsys, ["evaluate", "--run", str(run_dir), "--estimator", estimator,
                         *FAST[estimator], "--limit", "20", "--json"])
    assert REQUIRED_KEYS <= set(row)
    assert row["estimator"] == estimator and row["n"] == 20 and row["num_dims"] == 64
    assert row["num_samples"] == int(FAST[estimator][1])
    assert math.isfinite(row["log_likelihood"]) and row["log_likelihood"] < 0
    assert row["bits_per_dim"] == pytest.approx(-row["log_likelihood"] / (64 * math.log(2)))
    assert row["seconds"] > 0 and row["peak_rss_mb"] > 0
    assert 1.0 <= row["ess_mean"] <= row["num_samples"] + 1e-9
    if estimator == "ais":
        assert row["num_steps"] == 5 and 0.0 <= row["acceptance_rate"] <= 1.0


def test_each_evaluation_appends_a_csv_row(run_dir, capsys):
    for estimator in ("is", "ais", "elbo"):
        _json(capsys, ["evaluate", "--run", str(run_dir), "--estimator", estimator,
                       *FAST[estimator], "--limit", "10", "--json", "--no-progress"])
    df = pd.read_csv(run_dir / "evaluation.csv")
    assert list(df["estimator"]) == ["is", "ais", "elbo"]
    assert {"log_likelihood", "stderr", "bits_per_dim", "pareto_k_max", "seconds", "split",
            "seed"} <= set(df.columns)
    assert df["num_steps"].isna().tolist() == [True, False, True]  # AIS-only columns


def test_cli_equals_the_library_call(run_dir, capsys):
    from ppl_vae.marginal import importance_sampling
    from ppl_vae.training.runs import load_run

    row = _json(capsys, ["evaluate", "--run", str(run_dir), "--estimator", "is", "--samples",
                         "30", "--limit", "15", "--seed", "3", "--json", "--no-progress"])
    r = load_run(run_dir)
    lib = importance_sampling(r.model, r.guide, r.split("test")[:15], 30, seed=3)
    assert row["log_likelihood"] == pytest.approx(float(lib.log_likelihood.mean()), abs=1e-6)
    assert row["ess_mean"] == pytest.approx(float(lib.ess.mean()), rel=1e-6)


def test_elbo_is_below_the_iwae_bound(run_dir, capsys):
    common = ["evaluate", "--run", str(run_dir), "--samples", "200", "--limit", "30", "--json",
              "--no-progress"]
    elbo = _json(capsys, common + ["--estimator", "elbo"])
    iwae = _json(capsys, common + ["--estimator", "is"])
    # Same seed, same samples: mean log w <= log mean exp(log w) for every point (Jensen).
    assert elbo["log_likelihood"] <= iwae["log_likelihood"]


def test_human_readable_output(run_dir, capsys):
    assert main(["evaluate", "--run", str(run_dir), "--estimator", "naive", "--samples", "30",
                 "--limit", "10", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for text in ("nats", "bits/dim", "ESS", "Pareto k-hat", "evaluation.csv"):
        assert text in out


def test_progress_bar_goes_to_stderr(run_dir, capsys):
    row = _json(capsys, ["evaluate", "--run", str(run_dir), "--estimator", "is", "--samples",
                         "20", "--limit", "5", "--json"])
    assert row["n"] == 5


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--estimator", "is", "--samples", "0"], "--samples must be >= 1"),
        (["--estimator", "is", "--samples", "5", "--limit", "0"], "--limit must be >= 1"),
        (["--estimator", "ais", "--samples", "5", "--anneal-steps", "0"], "--anneal-steps"),
        (["--estimator", "is", "--samples", "5", "--split", "nope"], "unknown split"),
        (["--estimator", "is", "--samples", "5", "--batch-size", "0"], "--batch-size"),
    ],
    ids=["zero-samples", "zero-limit", "zero-steps", "bad-split", "zero-batch"],
)
def test_bad_input_is_a_clear_error(run_dir, capsys, argv, message):
    assert main(["evaluate", "--run", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert "ppl-vae evaluate: error:" in err and message in err
    assert not (run_dir / "evaluation.csv").exists()


def test_missing_run_and_unknown_estimator(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path / "nope"), "--estimator", "is",
                 "--samples", "5"]) == 2
    assert "--run " + str(tmp_path / "nope") + ": no such run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(tmp_path), "--estimator", "magic", "--samples", "5"])
    assert exc.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_cuda_requested_without_cuda(run_dir, capsys):
    assert main(["evaluate", "--run", str(run_dir), "--estimator", "is", "--samples", "5",
                 "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_a_long_ais_run_is_announced(run_dir, capsys, monkeypatch):
    import ppl_vae.commands.evaluate as evaluate

    monkeypatch.setattr(evaluate, "AIS_WARN_ROWS", 50)
    assert main(["evaluate", "--run", str(run_dir), "--estimator", "ais", "-k", "2",
                 "--limit", "3", "--anneal-steps", "5", "--leapfrog", "2", "--json"]) == 0
    err = capsys.readouterr().err
    assert "warning: AIS will compute 60 gradient rows" in err
    assert main(["evaluate", "--run", str(run_dir), "--estimator", "is", "-k", "2",
                 "--limit", "3", "--json"]) == 0
    assert "AIS will compute" not in capsys.readouterr().err


def test_the_per_point_csv_names_its_checkpoint(run_dir, tmp_path, capsys):
    import pandas as pd

    from ppl_vae.training.runs import load_run

    path = tmp_path / "points.csv"
    assert main(["evaluate", "--run", str(run_dir), "--estimator", "is", "-k", "3",
                 "--limit", "4", "--per-point", str(path), "--json"]) == 0
    table = pd.read_csv(path, dtype={"run_id": str, "checkpoint_id": str})
    run = load_run(run_dir)
    assert len(table) == 4 and set(table.checkpoint_id) == {run.checkpoint_id}
    assert set(table.run_id) == {run.run_id}


def test_the_command_line_process_writes_everything_before_its_fast_exit(run_dir):
    """Run as a program, evaluate ends without the interpreter's teardown (cli.exit_now): the
    JSON line, the CSV row and the exit status are all there."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ppl_vae", "evaluate", "--run", str(run_dir), "--estimator",
           "is", "--samples", "20", "--limit", "10", "--json", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 10
    assert len(pd.read_csv(run_dir / "evaluation.csv")) == 1
    bad = subprocess.run(cmd[:5] + [str(run_dir / "nowhere")] + cmd[6:], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "no such run directory" in bad.stderr


@pytest.mark.parametrize("grey", [False, True])
def test_an_npz_split_is_read_alone_as_the_run_would_read_it(run_dir, tmp_path, grey):
    import numpy as np

    from ppl_vae.commands.evaluate import _split
    from ppl_vae.io.data import load_dataset
    from ppl_vae.training.runs import load_run

    ds = load_dataset("digits")
    arrays = {k: getattr(ds, k).numpy() for k in ("train", "valid", "test")}
    if not grey:
        arrays = {k: (v > 0.5).astype(np.uint8) for k, v in arrays.items()}
    np.savez(tmp_path / "d.npz", **arrays)
    r = load_run(run_dir)
    r.config.data = str(tmp_path / "d.npz")
    expected = load_run(run_dir)
    expected.config.data = r.config.data
    assert torch.equal(_split(r, "test", 7), expected.split("test")[:7])
    assert torch.equal(_split(r, "valid"), expected.split("valid"))


def test_compile_runs_the_same_estimate_through_torch_compile(run_dir, capsys):
    """--compile: the same seeded draws through a compiled graph (float32 rounding apart);
    the default leaves a small evaluation generic; --no-compile never compiles."""
    common = ["evaluate", "--run", str(run_dir), "--estimator", "is", "--samples", "50",
              "--limit", "100", "--json", "--no-progress"]
    compiled = _json(capsys, common + ["--compile"])
    generic = _json(capsys, common + ["--no-compile"])
    default = _json(capsys, common)
    assert compiled["compiled"] is True and compiled["compile_seconds"] > 0
    assert compiled["log_likelihood"] == pytest.approx(generic["log_likelihood"], abs=1e-4)
    assert compiled["ess_mean"] == pytest.approx(generic["ess_mean"], rel=1e-3)
    assert "compiled" not in generic and "compiled" not in default
    assert default["log_likelihood"] == generic["log_likelihood"]
    assert main(common[:-2] + ["--compile", "--no-progress"]) == 0
    assert "log weights compiled (torch.compile)" in capsys.readouterr().out
