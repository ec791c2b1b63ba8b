"""ppl_vae: the Variational Autoencoder as a first-class Pyro probabilistic program.

The generative model p(z) p(x|z) is a Pyro model, the encoder q(z|x) a Pyro guide; training,
gradient estimators and marginal-likelihood estimators work on any such pair.

Importing ppl_vae turns on Pyro's ``module_local_params`` setting, so that the parameters of a
:class:`~pyro.nn.PyroModule` live in the module (as in plain PyTorch) rather than in Pyro's global
parameter store: two VAEs built in one process never silently share weights.
"""

import pyro as _pyro

_pyro.settings.set(module_local_params=True)

from . import guides, models  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    PplVaeError,
    TrainingDivergedError,
)
from .objectives import (  # noqa: E402
    Objective,
    available_objectives,
    make_objective,
    register_objective,
)
from .plates import data_plate  # noqa: E402
from .svi import SVI  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Objective",
    "PplVaeError",
    "SVI",
    "TrainingDivergedError",
    "available_objectives",
    "data_plate",
    "guides",
    "make_objective",
    "models",
    "register_objective",
]
