"""ppl_vae: the Variational Autoencoder as a first-class Pyro probabilistic program.

The generative model p(z) p(x|z) is a Pyro model, the encoder q(z|x) a Pyro guide; training,
gradient estimators and marginal-likelihood estimators work on any such pair.

ppl_vae leaves Pyro's global settings alone: our models are ordinary ``PyroModule`` s, so Pyro's
stock ``pyro.infer.SVI`` trains them too; :class:`ppl_vae.SVI` optimizes each module's own
parameters, so several models in one process never share weights through the param store.
"""

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
    can_infer_discrete,
    comparison_objectives,
    make_objective,
    register_objective,
)
from .plates import data_plate  # noqa: E402
from .svi import SVI  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .data import Dataset, load_dataset  # noqa: E402
from .builders import build_model_and_guide, register_model_family  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .training import TrainResult, estimate_elbo, train  # noqa: E402
from .runs import Run, load_run  # noqa: E402
from .generate import encode, impute, interpolate, reconstruct, sample_images  # noqa: E402
from .handlers import ScaleLatents  # noqa: E402
from .mcem import MonteCarloEM  # noqa: E402
from .active_units import ActiveUnits, report_active_units  # noqa: E402
from .marginal import (  # noqa: E402
    MarginalLikelihoodResult,
    annealed_importance_sampling,
    importance_sampling,
    naive_monte_carlo,
)

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
    "can_infer_discrete",
    "comparison_objectives",
    "data_plate",
    "TrainConfig",
    "Dataset",
    "load_dataset",
    "build_model_and_guide",
    "register_model_family",
    "load_checkpoint",
    "save_checkpoint",
    "TrainResult",
    "estimate_elbo",
    "train",
    "Run",
    "load_run",
    "encode",
    "impute",
    "interpolate",
    "reconstruct",
    "sample_images",
    "ScaleLatents",
    "MonteCarloEM",
    "ActiveUnits",
    "report_active_units",
    "MarginalLikelihoodResult",
    "naive_monte_carlo",
    "importance_sampling",
    "annealed_importance_sampling",
    "guides",
    "make_objective",
    "models",
    "register_objective",
]
