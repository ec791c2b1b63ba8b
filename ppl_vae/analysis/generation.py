"""What the decoder and encoder are for: samples, reconstructions, interpolations, latent
manifolds and traversals, attribute vectors.

Everything here works on any model/guide pair with an observed site (default ``"x"``), by running
the Pyro programs under effect handlers — no model-specific decode/encode methods are needed:

* prior samples: trace ``model(None, batch_size=n)`` (optionally under
  :class:`~ppl_vae.poutine.handlers.Temperature`) and read the observed site's distribution;
* codes: trace ``guide(x)``; "posterior means" run it under
  :class:`~ppl_vae.poutine.handlers.PointLatents` (every latent set to its distribution's mean,
  in the guide's sampling order);
* decoding: condition the model's latent sites on given values (``poutine.condition``); latent
  sites that are not given (the lower layers of a hierarchical model when only the top is given)
  take the mean of their conditional, so a decoded image is a deterministic function of the code;
* sites are found from traces: the latent sites are the model's non-observed sample sites, in the
  model's order, so the *top* latent (the one without latent parents in the model: ``"z"`` of a
  one-layer VAE, ``"zL"`` of a hierarchical one) is the first one sampled.

Imputation lives in :mod:`ppl_vae.marginal.imputation` (:func:`impute` here is the older
pseudo-Gibbs
scheme, kept for comparison).
"""

from __future__ import annotations

import torch
from pyro import poutine

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.poutine.handlers import PointLatents, Temperature
from ppl_vae.poutine.trace import latent_sites as trace_latent_sites
from ppl_vae.poutine.trace import latent_values, site_mean

__all__ = ["sample_images", "reconstruct", "interpolate", "impute_pseudo_gibbs", "encode", "decode",
           "latent_sites", "top_latent", "prior_quantiles", "manifold", "traverse",
           "attribute_direction", "apply_attribute", "slerp", "site_dim", "INTERPOLATIONS"]

INTERPOLATIONS = ("linear", "slerp")


def _observed_fn(tr, obs_site):
    if obs_site not in tr.nodes:
        raise ConfigError(f"the model has no sample site {obs_site!r} (pass obs_site=)")
    return tr.nodes[obs_site]


@torch.no_grad()
def latent_sites(model, guide, x) -> list[str]:
    """The model's latent sample sites, in the model's order (the top latent first), read from
    the model's trace replayed on the guide's latents for data ``x`` (so models without a
    samplable prior, e.g. an autoencoder, work too)."""
    gtr = poutine.trace(guide).get_trace(x)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x)
    names = list(trace_latent_sites(mtr))
    if not names:
        raise ConfigError("the model has no latent sample site")
    return names


def top_latent(model, guide, x) -> str:
    """The first latent site the model samples: the top of a hierarchy (``"zL"``), ``"z"``."""
    return latent_sites(model, guide, x)[0]


@torch.no_grad()
def sample_images(model, n: int, obs_site: str = "x", mean: bool = True,
                  temperature: float = 1.0) -> torch.Tensor:
    """``n`` draws from the generative model: E[x|z] (``mean=True``) or x ~ p(x|z), z ~ p(z).

    ``temperature`` T multiplies the standard deviation of every latent distribution
    (:class:`~ppl_vae.poutine.handlers.Temperature`: a Messenger replacing each latent site's
    location-
    scale distribution by the same family with scale T * scale); T = 1 samples the model itself.
    """
    fn = Temperature(temperature,
                     exclude=(obs_site,))(model) if float(temperature) != 1.0 else model
    try:
        tr = poutine.trace(fn).get_trace(None, batch_size=n)
    except NotImplementedError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            "the model's prior cannot be sampled (no proper prior p(z): an autoencoder?); "
            f"prior samples need a generative model ({first})") from None
    site = _observed_fn(tr, obs_site)
    return site_mean(site["fn"], site["fn"].sample) if mean else site["value"]


@torch.no_grad()
def encode(guide, x, mean: bool = False) -> dict:
    """Latent codes for every latent site of the guide, by name: z ~ q(z|x), or with
    ``mean=True`` the posterior mean (each site set to its distribution's mean given the means of
    the sites sampled before it; a flow's base mean pushed through the flow)."""
    fn = PointLatents()(guide) if mean else guide
    tr = poutine.trace(fn).get_trace(x)
    return latent_values(tr, detach=False)


@torch.no_grad()
def decode(model, latents: dict, obs_site: str = "x", mean: bool = True, x=None) -> torch.Tensor:
    """Decode given latent values: the model with the sites in ``latents`` conditioned on them,
    every other latent site at the mean of its conditional; returns E[x | z] (``mean=True``) or a
    draw x ~ p(x | z). The model is called as ``model(x)`` when ``x`` is given (its values do not
    matter), else as ``model(None, batch_size=n)`` with n the leading size of the latents."""
    if not latents:
        raise ConfigError("decode needs at least one latent value")
    fn = poutine.condition(PointLatents(exclude=(obs_site,))(model), data=latents)
    if x is not None:
        tr = poutine.trace(fn).get_trace(x)
    else:
        n = next(iter(latents.values())).shape[0]
        try:
            tr = poutine.trace(fn).get_trace(None, batch_size=n)
        except NotImplementedError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(f"cannot decode: a latent site was not given and cannot be "
                              f"sampled ({first})") from None
    site = _observed_fn(tr, obs_site)
    return site_mean(site["fn"], site["fn"].sample) if mean else site["value"]


@torch.no_grad()
def reconstruct(model, guide, x, obs_site: str = "x", mean: bool = True) -> torch.Tensor:
    """E[x | z] for the code of ``x``: z = the guide's posterior mean (``mean=True``, default;
    sites whose distribution has no mean are sampled) or z ~ q(z|x) (``mean=False``)."""
    return decode(model, encode(guide, x, mean=mean), obs_site, x=x)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical linear interpolation over the last dimension (White 2016, "Sampling generative
    networks"): sin((1-t)Ω)/sin Ω z0 + sin(tΩ)/sin Ω z1, Ω the angle between z0 and z1; linear
    where Ω ~ 0. Keeps the norm near that of typical N(0, I) draws, unlike the straight line."""
    a = z0 / z0.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = z1 / z1.norm(dim=-1, keepdim=True).clamp_min(eps)
    omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps))
    so = torch.sin(omega)
    lin = (1 - t) * z0 + t * z1
    sph = torch.sin((1 - t) * omega) / so * z0 + torch.sin(t * omega) / so * z1
    return torch.where(so.abs() < 1e-4, lin, sph)


@torch.no_grad()
def interpolate(model, guide, x_start, x_end, steps: int = 8, obs_site: str = "x",
                method: str = "linear", mean: bool = False) -> torch.Tensor:
    """Decoded images along a path between the latent codes of two images.

    ``method``: ``"linear"`` (the straight line) or ``"slerp"`` (:func:`slerp`); every latent
    site is interpolated. Codes: the guide's sample (default) or its mean (``mean=True``). One row
    per (start, end) pair; returns ``(pairs, steps, D)``.
    """
    if method not in INTERPOLATIONS:
        raise ConfigError(f"unknown interpolation method {method!r}; choose "
                          f"{' or '.join(INTERPOLATIONS)}")
    if int(steps) < 2:
        raise ConfigError(f"steps must be >= 2, got {steps}")
    z0, z1 = encode(guide, x_start, mean=mean), encode(guide, x_end, mean=mean)
    out = []
    for t in torch.linspace(0, 1, int(steps)).tolist():
        if method == "linear":
            z = {k: (1 - t) * z0[k] + t * z1[k] for k in z0}
        else:
            z = {k: slerp(z0[k], z1[k], t) for k in z0}
        out.append(decode(model, z, obs_site, x=x_start))
    return torch.stack(out, dim=1)


def _icdf(fn, u: torch.Tensor) -> torch.Tensor:
    """Per-dimension quantiles of a factorized latent distribution at probabilities ``u``
    (shape ``(G, J)``); NotImplementedError when the family has no icdf."""
    import pyro.distributions as dist
    from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

    while isinstance(fn, (dist.Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    if isinstance(fn, dist.Normal):  # icdf of one data point's factor, broadcast over G
        loc = fn.loc.reshape(-1, fn.loc.shape[-1])[:1]
        scale = fn.scale.reshape(-1, fn.scale.shape[-1])[:1]
        return loc + scale * dist.Normal(0.0, 1.0).icdf(u)
    return fn.icdf(u)  # raises NotImplementedError for most other families


@torch.no_grad()
def prior_quantiles(model, guide, x_ref, site: str, steps: int, lo: float = 0.05,
                    hi: float = 0.95) -> torch.Tensor:
    """``(steps, J)``: the quantiles at probabilities ``linspace(lo, hi, steps)`` of each
    dimension of the top latent's prior p(z) (Kingma & Welling 2014, fig. 4: the Normal icdf of a
    uniform grid), read from the model's trace. For a model whose latent has no proper prior (an
    autoencoder) the empirical quantiles of the encoded ``x_ref`` (posterior means) are used."""
    gtr = poutine.trace(PointLatents()(guide)).get_trace(x_ref)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x_ref)
    if site not in mtr.nodes:
        raise ConfigError(f"the model has no latent site {site!r}")
    u = torch.linspace(lo, hi, int(steps)).unsqueeze(-1)
    fn = mtr.nodes[site]["fn"]
    value = mtr.nodes[site]["value"]
    try:
        q = _icdf(fn, u.expand(-1, value.shape[-1]))
        if torch.isfinite(q).all():
            return q.to(value.dtype)
    except (NotImplementedError, AttributeError, ValueError, RuntimeError):
        pass
    codes = value.reshape(-1, value.shape[-1])
    return torch.quantile(codes.double(), u.squeeze(-1).double(), dim=0).to(value.dtype)


def site_dim(model, guide, x, site) -> int:
    """The number of coordinates of latent site ``site`` (the guide's code of ``x[:1]``)."""
    z = encode(guide, x[:1], mean=True)
    if site not in z:
        raise ConfigError(f"the guide has no latent site {site!r}; it has {sorted(z)}")
    return int(z[site].shape[-1])


@torch.no_grad()
def manifold(model, guide, x_ref, steps: int = 15, site: str | None = None,
             obs_site: str = "x") -> torch.Tensor:
    """The learned 2-D manifold: decode a ``steps`` x ``steps`` grid of the top latent site's
    prior quantiles (:func:`prior_quantiles`). Row r, column c holds z = (q_c of dim 0, q_r of
    dim 1), with dim 1 decreasing down the rows (so the picture's axes read like a plot). The
    lower latents of a hierarchical model take the means of their conditionals. Returns
    ``(steps * steps, D)``; :class:`ConfigError` when the site is not 2-dimensional."""
    site = site or top_latent(model, guide, x_ref[:2])
    j = site_dim(model, guide, x_ref, site)
    if j != 2:
        raise ConfigError(f"a 2-D manifold needs a 2-dimensional latent, but site {site!r} has "
                          f"{j} dimensions; traverse chosen dimensions instead (--dims 0,1 "
                          "--around INDEX)")
    q = prior_quantiles(model, guide, x_ref, site, steps)
    gx, gy = q[:, 0], q[:, 1].flip(0)
    z = torch.stack([gx.repeat(len(gy)), gy.repeat_interleave(len(gx))], dim=-1)
    return decode(model, {site: z}, obs_site)


@torch.no_grad()
def traverse(model, guide, x_point, dims, steps: int = 9, site: str | None = None,
             obs_site: str = "x", x_ref=None) -> torch.Tensor:
    """Latent traversal around one data point: the top latent's posterior mean for ``x_point``
    (shape ``(1, D)``), with the dimensions in ``dims`` moved over the prior's quantiles
    (:func:`prior_quantiles`) and the others fixed. Two dims give a ``steps`` x ``steps`` grid
    (like :func:`manifold`, dim ``dims[1]`` decreasing down the rows); otherwise one row per dim.
    Returns ``(rows * steps, D)``."""
    if x_point.dim() != 2 or x_point.shape[0] != 1:
        raise DataError(f"x_point must have shape (1, D), got {tuple(x_point.shape)}")
    site = site or top_latent(model, guide, x_point)
    j = site_dim(model, guide, x_point, site)
    dims = [int(d) for d in dims]
    if not dims or any(d < 0 or d >= j for d in dims):
        raise ConfigError(f"latent dimensions {dims} out of range: site {site!r} has {j} "
                          f"dimensions (0..{j - 1})")
    base = encode(guide, x_point, mean=True)[site]
    q = prior_quantiles(model, guide, x_point if x_ref is None else x_ref, site, steps)
    if len(dims) == 2:
        gx, gy = q[:, dims[0]], q[:, dims[1]].flip(0)
        z = base.repeat(len(gx) * len(gy), 1)
        z[:, dims[0]] = gx.repeat(len(gy))
        z[:, dims[1]] = gy.repeat_interleave(len(gx))
    else:
        rows = []
        for d in dims:
            r = base.repeat(q.shape[0], 1)
            r[:, d] = q[:, d]
            rows.append(r)
        z = torch.cat(rows)
    return decode(model, {site: z}, obs_site)


@torch.no_grad()
def attribute_direction(guide, x, has_attribute) -> dict:
    """Per latent site: mean posterior-mean code of the examples with the attribute minus that of
    the examples without it (the "attribute vector" of e.g. White 2016, Larsen et al. 2016)."""
    has = torch.as_tensor(has_attribute, dtype=torch.bool)
    if has.shape != (x.shape[0],):
        raise DataError(f"has_attribute must have one entry per data point ({x.shape[0]}), got "
                        f"shape {tuple(has.shape)}")
    if not has.any() or has.all():
        raise DataError(f"the attribute must be present in some but not all examples (present "
                        f"in {int(has.sum())} of {has.numel()})")
    z = encode(guide, x, mean=True)
    return {k: v[has].mean(0) - v[~has].mean(0) for k, v in z.items()}


@torch.no_grad()
def apply_attribute(model, guide, x, direction: dict, alphas, obs_site: str = "x"):
    """Decode z + alpha * direction for every example of ``x`` (posterior-mean codes) and every
    alpha; every latent site in ``direction`` is moved. Returns ``(N, len(alphas), D)``."""
    z = encode(guide, x, mean=True)
    out = []
    for a in [float(a) for a in alphas]:
        out.append(decode(model, {k: v + a * direction[k] for k, v in z.items()
                                  if k in direction}, obs_site, x=x))
    return torch.stack(out, dim=1)


@torch.no_grad()
def impute_pseudo_gibbs(model, guide, x, observed_mask, iterations: int = 20,
                        obs_site: str = "x"):
    """Fill in missing pixels (``observed_mask`` False) by iterating x_miss <- E[x|z], z ~ q(z|x).

    The pseudo-Gibbs scheme of Rezende et al. (2014), section 5.3: start the missing pixels at
    0.5, alternate encoding and decoding, keep the observed pixels fixed. It is *not* a valid
    sampler of p(x_miss | x_obs) (q is not the exact posterior); see
    :func:`ppl_vae.impute` (:func:`ppl_vae.marginal.imputation.impute`) for the principled
    method the CLI uses.
    """
    observed_mask = observed_mask.bool()
    cur = torch.where(observed_mask, x, torch.full_like(x, 0.5))
    for _ in range(iterations):
        cur = torch.where(observed_mask, x, reconstruct(model, guide, cur, obs_site, mean=False))
    return cur
