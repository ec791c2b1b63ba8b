"""Learning-rate schedules: epoch -> learning rate.

``constant``
    ``lr`` at every epoch.
``burda``
    the schedule of Burda, Grosse & Salakhutdinov (2016, "Importance Weighted Autoencoders",
    section 5): 8 stages i = 0, ..., 7; stage i makes 3**i passes over the data at learning rate
    ``lr * 10**(-i/7)`` (with their lr = 1e-3: 1e-3, 7.2e-4, ..., 1.39e-4), 3280 epochs in all.
    ``--epochs`` caps the total: a run of E < 3280 epochs stops inside the schedule, and more
    than 3280 is refused.
"""

from __future__ import annotations

from ppl_vae.errors import ConfigError

__all__ = ["LR_SCHEDULES", "BURDA_STAGES", "BURDA_EPOCHS", "burda_stages", "learning_rate",
           "check_schedule"]

LR_SCHEDULES = ("constant", "burda")
BURDA_STAGES = 8
BURDA_EPOCHS = sum(3**i for i in range(BURDA_STAGES))  # 3280


def burda_stages(lr: float = 1e-3) -> list[tuple[int, int, float]]:
    """``[(first_epoch, num_epochs, lr_i)]`` for i = 0..7 (epochs counted from 0)."""
    out, start = [], 0
    for i in range(BURDA_STAGES):
        out.append((start, 3**i, float(lr) * 10.0 ** (-i / 7.0)))
        start += 3**i
    return out


def learning_rate(schedule: str, epoch: int, lr: float) -> float:
    """The learning rate of (0-based) ``epoch`` under ``schedule`` with base rate ``lr``."""
    if schedule == "constant":
        return float(lr)
    if schedule == "burda":
        for start, length, stage_lr in burda_stages(lr):
            if epoch < start + length:
                return stage_lr
        raise ConfigError(f"epoch {epoch + 1} is past the end of the burda schedule "
                          f"({BURDA_EPOCHS} epochs)")
    raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")


def check_schedule(schedule: str, epochs: int) -> None:
    """:class:`ConfigError` when ``epochs`` do not fit ``schedule``."""
    if schedule == "burda" and int(epochs) > BURDA_EPOCHS:
        raise ConfigError(f"the burda schedule has {BURDA_EPOCHS} epochs; --epochs {epochs} "
                          "exceeds it")
