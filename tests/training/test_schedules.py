"""Learning-rate schedules (:mod:`ppl_vae.training.schedules`: Burda et al.'s 3^i epochs at
lr * 10^(-i/7)) and the Adam options, from the configuration to the optimizer's state."""

from __future__ import annotations

import pytest

from ppl_vae import TrainConfig, train
from ppl_vae.errors import ConfigError
from ppl_vae.io.checkpoint import load_checkpoint
from ppl_vae.training.schedules import BURDA_EPOCHS, burda_stages, learning_rate


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
