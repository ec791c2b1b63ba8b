"""Effect handlers used by the training loop."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

from ppl_vae.poutine.trace import is_latent, point_estimate

__all__ = ["ScaleLatents", "Temperature", "PointLatents", "tempered"]


class ScaleLatents(Messenger):
    """Multiply the log density of every *latent* (non-observed) sample site by ``beta``.

    Applied to both model and guide, the Monte Carlo ELBO becomes the KL-annealed objective
    E_q[log p(x|z)] + beta * E_q[log p(z) - log q(z|x)] used for warm-up (Bowman et al. 2016;
    Sønderby et al. 2016). ``beta`` is a plain attribute, so one handler instance can be updated
    step by step. Unlike ``poutine.scale`` it accepts beta = 0.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def _pyro_sample(self, msg):
        if is_latent(msg) and self.beta != 1.0:
            msg["scale"] = msg["scale"] * self.beta


_LOC_SCALE = ("Normal", "Laplace", "Cauchy", "Logistic", "Gumbel")


def tempered(fn, temperature: float):
    """``fn`` with its scale multiplied by ``temperature`` (location unchanged).

    Unwraps Pyro's ``Independent`` (``.to_event``), ``ExpandedDistribution`` (``.expand``) and
    ``MaskedDistribution`` wrappers and rebuilds them around the tempered base distribution.
    Supported bases: location-scale families with a ``(loc, scale)`` constructor (Normal,
    Laplace, Cauchy, ...) and ``MultivariateNormal`` (its ``scale_tril`` is scaled). Anything else
    (a discrete prior, an improper one) raises :class:`~ppl_vae.errors.ConfigError`.
    """
    import pyro.distributions as dist
    from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

    from ppl_vae.errors import ConfigError

    t = float(temperature)
    if isinstance(fn, dist.Independent):
        return tempered(fn.base_dist, t).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        return tempered(fn.base_dist, t).expand(fn.batch_shape)
    if isinstance(fn, MaskedDistribution):
        return tempered(fn.base_dist, t).mask(fn._mask)
    if isinstance(fn, dist.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc, scale_tril=fn.scale_tril * t)
    if type(fn).__name__ in _LOC_SCALE and hasattr(fn, "loc") and hasattr(fn, "scale"):
        return type(fn)(fn.loc, fn.scale * t)
    raise ConfigError(
        f"cannot apply a temperature to a {type(fn).__name__} latent distribution: only "
        "location-scale families (Normal, Laplace, ...) and MultivariateNormal have a scale")


class Temperature(Messenger):
    """Multiply the scale (std) of every latent sample site's distribution by ``temperature``.

    The choice (documented in ``docs/toolkit.md``): a Messenger that *replaces* ``msg["fn"]`` of
    each non-observed site by the same location-scale distribution with scale ``T * scale``
    (:func:`tempered`), before the value is drawn. T = 1 is the model itself, T < 1 draws closer
    to the mode of p(z) (sharper, less varied samples), T > 1 wider. In a hierarchical model every
    conditional p(z_l | z_{l+1}) is tempered, not only the top prior. ``sites`` restricts it to
    the named sites, ``exclude`` leaves the named ones alone (e.g. the data site ``"x"``, which
    is a non-observed site when the model is run without data). Observed sites are never touched.
    """

    def __init__(self, temperature: float = 1.0, sites=None, exclude=()):
        super().__init__()
        from ppl_vae.errors import ConfigError

        if not float(temperature) > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.sites = None if sites is None else set(sites)
        self.exclude = set(exclude)

    def _pyro_sample(self, msg):
        if not is_latent(msg) or (self.sites is not None and msg["name"] not in self.sites):
            return
        if msg["name"] in self.exclude:
            return
        if self.temperature != 1.0:
            msg["fn"] = tempered(msg["fn"], self.temperature)


class PointLatents(Messenger):
    """Set every latent site (or those in ``sites``) to its distribution's point estimate
    (:func:`point_estimate`, the mean) instead of sampling it. Sites that already carry a value
    (conditioned, replayed) keep it. Used for "posterior mean" codes and deterministic decoding
    of lower layers. ``exclude``: sites left alone (the data site of a model run without data)."""

    def __init__(self, sites=None, exclude=()):
        super().__init__()
        self.sites = None if sites is None else set(sites)
        self.exclude = set(exclude)

    def _pyro_sample(self, msg):
        if not is_latent(msg) or msg["value"] is not None or msg["name"] in self.exclude:
            return
        if self.sites is not None and msg["name"] not in self.sites:
            return
        try:
            value = point_estimate(msg["fn"])
        except NotImplementedError:
            return
        shape = msg["fn"].shape()
        msg["value"] = value.expand(shape) if value.shape != shape else value
