"""Exceptions raised by ppl_vae.

Every error a user can cause (bad data, bad option, corrupt checkpoint, diverged training) is a
subclass of :class:`PplVaeError`, so the CLI can print one clear line instead of a traceback.
"""

__all__ = ["PplVaeError", "DataError", "ConfigError", "CheckpointError", "TrainingDivergedError",
           "DistributedError", "PplVaeWarning"]


class PplVaeError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class DataError(PplVaeError, ValueError):
    """A data set is missing, malformed, or has values outside the likelihood's support."""


class ConfigError(PplVaeError, ValueError):
    """An unknown option or an inconsistent combination of options."""


class CheckpointError(PplVaeError):
    """A checkpoint is missing, corrupt, truncated, or incompatible with the requested config."""


class TrainingDivergedError(PplVaeError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DistributedError(PplVaeError, RuntimeError):
    """A collective operation of a distributed run failed: another worker died, hung past the
    process group's timeout, or cannot be reached."""


class PplVaeWarning(UserWarning):
    """Something the user should know, though the command goes on (the CLI prints it as one
    ``ppl-vae CMD: warning: ...`` line)."""
