"""ppl_vae: the Variational Autoencoder as a first-class Pyro probabilistic program.

The generative model p(z) p(x|z) is a Pyro model, the encoder q(z|x) a Pyro guide; training,
gradient estimators and marginal-likelihood estimators work on any such pair.

ppl_vae leaves Pyro's global settings alone: our models are ordinary ``PyroModule`` s, so Pyro's
stock ``pyro.infer.SVI`` trains them too; :class:`ppl_vae.SVI` optimizes each model's own
parameters, so several models in one process never share weights through the param store.

The names below are imported on first use (PEP 562), so ``import ppl_vae`` and ``ppl-vae
--help`` do not pay for torch, Pyro, pandas or matplotlib until something needs them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "errors", "ConfigError": "errors", "DataError": "errors",
    "PplVaeError": "errors", "TrainingDivergedError": "errors",
    "Objective": "objectives", "available_objectives": "objectives",
    "can_infer_discrete": "objectives", "comparison_objectives": "objectives",
    "make_objective": "objectives", "register_objective": "objectives",
    "data_plate": "plates", "SVI": "svi", "TrainConfig": "config",
    "Dataset": "data", "load_dataset": "data",
    "build_model_and_guide": "builders", "register_model_family": "builders",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "TrainResult": "training", "estimate_elbo": "training", "train": "training",
    "Run": "runs", "load_run": "runs",
    "apply_attribute": "generate", "attribute_direction": "generate", "decode": "generate",
    "encode": "generate", "impute": "generate", "interpolate": "generate",
    "manifold": "generate", "reconstruct": "generate", "sample_images": "generate",
    "traverse": "generate",
    "PointLatents": "handlers", "ScaleLatents": "handlers", "Temperature": "handlers",
    "MaskObservations": "imputation", "impute_importance": "imputation",
    "missing_mask": "imputation", "inference_gaps": "posterior", "nuts_posterior": "posterior",
    "knn_accuracy": "representation", "normality": "representation",
    "posterior_means": "representation",
    "ActiveUnits": "active_units",
    "report_active_units": "active_units",
    "MarginalLikelihoodResult": "marginal", "annealed_importance_sampling": "marginal",
    "estimate_log_likelihood": "marginal", "importance_sampling": "marginal",
    "naive_monte_carlo": "marginal", "MonteCarloEM": "mcem",
}
_SUBMODULES = ("guides", "models", "marginal", "infer", "objectives")

__all__ = sorted([*_EXPORTS, "guides", "models"])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'ppl_vae' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
