"""Build a model/guide pair from a :class:`~ppl_vae.training.config.TrainConfig`.

Model families are registered by name (``config.model``); each builder takes ``(config, x_dim)``
and returns ``(model, guide)``, two Pyro callables with the signature ``(x, num_data=None)``.
"""

from __future__ import annotations

from typing import Callable

from ppl_vae.errors import ConfigError
from ppl_vae.training.config import TrainConfig

__all__ = ["MODEL_FAMILIES", "register_model_family", "build_model_and_guide"]

MODEL_FAMILIES: dict[str, Callable] = {}


def register_model_family(name: str):
    def deco(fn):
        MODEL_FAMILIES[name] = fn
        return fn

    return deco


def build_model_and_guide(config: TrainConfig, x_dim: int):
    """``(model, guide)`` for ``config`` on data with ``x_dim`` features per point: a registered
    family, or your own factory (``module:factory`` or ``file.py:factory``, see
    :mod:`ppl_vae.training.user_models`)."""
    from ppl_vae.training.user_models import build_user_pair, is_user_model

    if is_user_model(config.model):
        return build_user_pair(config.model, config, int(x_dim))
    if config.model not in MODEL_FAMILIES:
        raise ConfigError(
            f"unknown model {config.model!r}; choose one of {sorted(MODEL_FAMILIES)}"
        )
    return MODEL_FAMILIES[config.model](config, int(x_dim))


GUIDES = ("bottom-up", "top-down", "iaf")


def _objective_spec(objective: str):
    """The registered spec of ``objective``, or None for an unknown name (reported where the
    objective is built, with the list of names)."""
    from ppl_vae.infer.objectives import objective_spec

    try:
        return objective_spec(objective)
    except ConfigError:
        return None


def _uses_analytic_kl(objective: str) -> bool:
    """Whether the objective's ELBO is a TraceMeanField_ELBO (analytic KL)."""
    from pyro.infer import TraceMeanField_ELBO

    spec = _objective_spec(objective)
    return spec is not None and issubclass(spec.elbo_class, TraceMeanField_ELBO)


@register_model_family("vae")
def _vae(config: TrainConfig, x_dim: int):
    """The VAE of any depth L = len(latent_dims).

    L = 1 with the bottom-up guide: :class:`~ppl_vae.models.VAEModel` and
    :class:`~ppl_vae.guides.DiagonalNormalGuide` (weights ``decoder.*``/``encoder.*``, site "z").
    Otherwise :class:`~ppl_vae.models.HierarchicalVAE` (sites "z1".."zL") with
    :class:`~ppl_vae.guides.BottomUpGuide` or :class:`~ppl_vae.guides.TopDownGuide`, in the MLP
    architecture of Burda et al. (2016): ``hidden`` between x and z1, ``len(hidden)`` layers of
    width dim(z_l) between z_l and z_{l+1}.
    ``guide="iaf"`` (one stochastic layer): :class:`~ppl_vae.guides.IAFGuide`, the diagonal
    Gaussian encoder followed by ``flow_depth`` inverse autoregressive flow steps.
    """
    from ppl_vae.guides import BottomUpGuide, DiagonalNormalGuide, TopDownGuide
    from ppl_vae.models import HierarchicalVAE, VAEModel

    if config.guide not in GUIDES:
        raise ConfigError(f"unknown guide {config.guide!r} for model 'vae'; choose one of "
                          f"{', '.join(GUIDES)}")
    depth = len(config.latent_dims)
    if config.guide == "iaf":
        from ppl_vae.guides import IAFGuide

        if depth != 1:
            raise ConfigError("guide 'iaf' is for one stochastic layer: give one --latent-dim")
        if _uses_analytic_kl(config.objective):
            raise ConfigError(f"objective {config.objective!r} needs an analytic KL, which the "
                              "IAF guide (a normalizing flow) does not have; use trace or iwae")
        (j,) = config.latent_dims
        model = VAEModel(x_dim, j, tuple(reversed(config.hidden)), config.likelihood_spec(),
                         config.activation)
        guide = IAFGuide(x_dim, j, config.hidden, config.activation, config.flow_depth)
        _initialize(config, model, guide)
        return model, guide
    if depth > 1 and config.guide == "bottom-up" and _uses_analytic_kl(config.objective):
        raise ConfigError(
            f"objective {config.objective!r} (analytic KL, TraceMeanField_ELBO) is not valid for "
            f"the bottom-up guide with {depth} stochastic layers: in the model z1 depends on z2, "
            "but the bottom-up guide samples z2 from z1, so KL(q(z1|x) || p(z1|z2)) at the "
            "sampled z2 is a biased term; use --guide top-down (same dependency order as the "
            "model) or --objective trace")
    if depth == 1 and config.guide == "bottom-up":
        (j,) = config.latent_dims
        model = VAEModel(x_dim, j, tuple(reversed(config.hidden)), config.likelihood_spec(),
                         config.activation)
        guide = DiagonalNormalGuide(x_dim, j, config.hidden, config.activation)
        _initialize(config, model, guide)
        return model, guide
    model = HierarchicalVAE.mlp(x_dim, config.latent_dims, config.hidden,
                                config.likelihood_spec(), config.activation)
    if config.guide == "bottom-up":
        guide = BottomUpGuide.mlp(x_dim, config.latent_dims, config.hidden, config.activation)
    else:
        guide = TopDownGuide.mlp(model, x_dim, config.hidden, config.activation)
    _initialize(config, model, guide)
    if config.prior_init == "standard":
        model.reset_conditionals()
        if config.guide == "bottom-up":
            guide.reset_upper_layers()
    return model, guide


def _initialize(config: TrainConfig, *modules) -> None:
    """Apply ``config.weight_init`` to the networks of ``modules`` (after they are built; each
    part where it applies, see :mod:`ppl_vae.training.initialization`)."""
    from ppl_vae.training.initialization import initialize_networks

    initialize_networks(config.weight_init, *modules)


@register_model_family("sbn")
def _sbn(config: TrainConfig, x_dim: int):
    """The sigmoid belief network: :class:`~ppl_vae.models.SigmoidBeliefNetwork` (Bernoulli
    latents "z", Bernoulli decoder with ``reversed(hidden)`` layers) and
    :class:`~ppl_vae.guides.BernoulliGuide` (``hidden`` layers). Its latents are discrete, so only
    objectives whose ELBO ``can_infer_discrete`` apply (trace, tracegraph, score, score-avg,
    score-nn, rws, stl)."""
    from ppl_vae.guides import BernoulliGuide
    from ppl_vae.models import SigmoidBeliefNetwork

    if len(config.latent_dims) != 1:
        raise ConfigError("model 'sbn' has one stochastic layer: give one --latent-dims value")
    if config.guide != "bottom-up":
        raise ConfigError(f"unknown guide {config.guide!r} for model 'sbn'; choose bottom-up")
    if config.likelihood != "bernoulli":
        raise ConfigError("model 'sbn' has a Bernoulli decoder: use --likelihood bernoulli")
    spec = _objective_spec(config.objective)
    if spec is not None and not spec.can_infer_discrete:
        raise ConfigError(
            f"objective {config.objective!r} needs reparameterizable latents, but the sigmoid "
            "belief network's are discrete; use score-avg, score-nn, rws, tracegraph or trace")
    (j,) = config.latent_dims
    model = SigmoidBeliefNetwork(x_dim, j, tuple(reversed(config.hidden)), config.activation)
    guide = BernoulliGuide(x_dim, j, config.hidden, config.activation)
    _initialize(config, model, guide)
    return model, guide


def _autoencoder(config: TrainConfig, x_dim: int, denoising: bool):
    from ppl_vae.guides import DenoisingPointGuide, PointGuide
    from ppl_vae.models import AutoencoderModel

    name = "dae" if denoising else "ae"
    if len(config.latent_dims) != 1:
        raise ConfigError(f"model {name!r} has one latent layer: give one --latent-dim")
    if config.guide != "bottom-up":
        raise ConfigError(f"model {name!r} has its own point-mass encoder; drop --guide "
                          f"{config.guide}")
    if config.objective not in ("trace", "tracegraph"):
        raise ConfigError(f"model {name!r} trains with --objective trace (its ELBO is the "
                          f"reconstruction log-likelihood), not {config.objective!r}")
    (j,) = config.latent_dims
    model = AutoencoderModel(x_dim, j, tuple(reversed(config.hidden)), config.likelihood_spec(),
                             config.activation)
    if denoising:
        if config.noise <= 0:
            raise ConfigError("model 'dae' needs --noise > 0 (else it is model 'ae')")
        guide = DenoisingPointGuide(x_dim, j, config.hidden, config.activation, config.noise,
                                    config.noise_type)
    else:
        guide = PointGuide(x_dim, j, config.hidden, config.activation)
    _initialize(config, model, guide)
    return model, guide


@register_model_family("ae")
def _ae(config: TrainConfig, x_dim: int):
    """Deterministic autoencoder as a model/guide pair: :class:`~ppl_vae.models.AutoencoderModel`
    (improper flat prior, the VAE's decoder) and :class:`~ppl_vae.guides.PointGuide`
    (q = Delta(f(x)), the VAE's encoder widths): ``Trace_ELBO`` = log p(x | z = f(x)), the
    reconstruction log-likelihood. No prior, no density: marginal-likelihood estimators refuse it.
    """
    return _autoencoder(config, x_dim, denoising=False)


@register_model_family("dae")
def _dae(config: TrainConfig, x_dim: int):
    """Denoising autoencoder: as ``ae``, with :class:`~ppl_vae.guides.DenoisingPointGuide`
    encoding a corrupted input (``config.noise``, ``config.noise_type``) during training."""
    return _autoencoder(config, x_dim, denoising=True)
