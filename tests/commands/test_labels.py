"""Honest labels and quiet commands: a bound is called a bound, grad-variance shows progress
(and takes --no-progress), Pyro's INFO lines stay out of stderr."""

from __future__ import annotations

import pytest

import ppl_vae
from ppl_vae.commands.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from ppl_vae.io.data import Dataset, load_dataset

    digits = load_dataset("digits", likelihood="bernoulli")
    tiny = Dataset("digits", digits.train[:128], digits.valid[:32], digits.test[:32],
                   digits.image_shape)
    out = tmp_path_factory.mktemp("labels")
    ppl_vae.train(dict(data="digits", latent_dims=(2,), hidden=(16,), epochs=1, batch_size=32),
                  out=out, dataset=tiny, progress=False, reports=False)
    return out


@pytest.mark.parametrize("estimator,label", [("elbo", "ELBO (lower bound on log p(x)) ="),
                                             ("is", "IS bound L_K on log p(x)")])
def test_evaluate_calls_a_bound_a_bound(tiny_run, capsys, estimator, label):
    assert main(["evaluate", "--run", tiny_run, "--estimator", estimator, "--samples", "4",
                 "--limit", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert label in out and "log p(x) ~" not in out


def test_grad_variance_shows_progress_and_takes_no_progress(tiny_run, capfd):
    argv = ["grad-variance", "--run", tiny_run, "--objectives", "trace,score-avg", "--draws",
            "3", "--batch-size", "4", "--warmup", "2"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    assert "grad-variance" in err and "draw" in err  # the bar (with its total: an ETA)
    assert main([*argv, "--no-progress"]) == 0
    assert "grad-variance:" not in capfd.readouterr().err


def test_pyro_info_lines_are_silenced_in_commands(tiny_run, tmp_path):
    import logging

    # Pyro's own handler prints "INFO \t Guessed max_plate_nesting = 2" on stderr (bound at
    # import time, which pytest's capture cannot see): the command switches the level off
    assert main(["sample", "--run", tiny_run, "-n", "4", "--out", tmp_path / "s.png"]) == 0
    assert not logging.getLogger("pyro.infer.elbo").isEnabledFor(logging.INFO)
