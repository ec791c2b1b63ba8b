"""ppl_vae: the Variational Autoencoder as a first-class Pyro probabilistic program.

The generative model p(z) p(x|z) is a Pyro model, the encoder q(z|x) a Pyro guide; training,
gradient estimators and marginal-likelihood estimators work on any such pair.

Layout, by role (as Pyro groups ``infer/ poutine/ distributions/ nn/``), lowest layer first:

==========================  ==================================================================
``ppl_vae.errors``          the exception hierarchy (one line per mistake, exit code 2)
``ppl_vae.nn``              networks: :class:`~ppl_vae.nn.MLP`, initialisation helpers
``ppl_vae.poutine``         effect handlers, the data plate, and the one trace vocabulary
``ppl_vae.models``          generative models p(z) p(x|z) (``models/`` in the repository)
``ppl_vae.guides``          guides q(z|x) (``guides/`` in the repository)
``ppl_vae.io``              data sets, checkpoints, CSV/JSON reporting, figures
``ppl_vae.infer``           objectives (the registry), ELBO classes, SVI, Monte Carlo EM
``ppl_vae.marginal``        log p(x) estimation (naive MC, IS, AIS) and imputation
``ppl_vae.training``        configuration, builders, initialisation, schedules, the training
                            loop, callbacks, runs, torch.distributed
``ppl_vae.analysis``        what a trained pair is for: generation, representation, posterior
                            inference, active units, gradient statistics, estimator comparison,
                            end-of-run reports
``ppl_vae.commands``        the ``ppl-vae`` command line: argument parsing and printing only
==========================  ==================================================================

Rules: a module imports only from its own layer and the layers listed before it (checked by
``tests/test_layout.py``); the command line holds no computation a Python user could not call;
the training loop writes what resuming needs, and everything else (figures, reports, loggers)
is a :class:`~ppl_vae.training.callbacks.Callback` the caller attaches.

ppl_vae leaves Pyro's global settings alone: our models are ordinary ``PyroModule`` s, so Pyro's
stock ``pyro.infer.SVI`` trains them too; :class:`ppl_vae.SVI` optimizes each model's own
parameters, so several models in one process never share weights through the param store.

The names below are imported on first use (PEP 562), so ``import ppl_vae`` and ``ppl-vae
--help`` do not pay for torch, Pyro, pandas or matplotlib until something needs them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# the module (relative to ppl_vae) -> the public names it defines
_MODULE_EXPORTS = {
    "errors": ("CheckpointError", "ConfigError", "DataError", "PplVaeError",
               "TrainingDivergedError",),
    "infer.objectives": ("Objective", "available_objectives", "can_infer_discrete",
                         "comparison_objectives", "make_objective", "register_objective",),
    "poutine.plates": ("data_plate",),
    "infer.svi": ("SVI",),
    "training.config": ("TrainConfig",),
    "io.data": ("Dataset", "load_dataset",),
    "training.builders": ("build_model_and_guide", "register_model_family",),
    "io.checkpoint": ("load_checkpoint", "save_checkpoint",),
    "training.loop": ("TrainResult", "estimate_elbo",),
    "analysis.reports": ("RunReport", "train",),
    "training.callbacks": ("Callback",),
    "training.fit": ("fit",),
    "training.runs": ("Run", "load_run",),
    "analysis.generation": ("apply_attribute", "attribute_direction", "decode", "encode",
                            "impute_pseudo_gibbs", "interpolate", "manifold", "reconstruct",
                            "sample_images", "traverse",),
    "poutine.handlers": ("PointLatents", "ScaleLatents", "Temperature",),
    "marginal.imputation": ("MaskObservations", "impute", "missing_mask",),
    "analysis.imputation": ("evaluate_imputation",),
    "analysis.posterior": ("check_posterior", "inference_gaps", "nuts_posterior",),
    "analysis.representation": ("evaluate_representation", "knn_accuracy", "normality",
                                "posterior_means",),
    "analysis.active_units": ("ActiveUnits", "report_active_units",),
    "marginal": ("MarginalLikelihoodResult", "annealed_importance_sampling",
                 "bidirectional_monte_carlo",
                 "estimate_log_likelihood", "importance_sampling", "model_evidence",
                 "naive_monte_carlo",),
    "infer.mcem": ("MonteCarloEM",),
}
_EXPORTS = {name: module for module, names in _MODULE_EXPORTS.items() for name in names}
_SUBMODULES = ("analysis", "commands", "guides", "infer", "io", "marginal", "models", "poutine",
               "training")

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
