"""Training configuration: everything needed to rebuild a run, saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ppl_vae.errors import ConfigError

__all__ = ["TrainConfig"]


def _int_tuple(value, name) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a comma-separated list of integers, got {value!r}")
    if not out or any(v < 1 for v in out):
        raise ConfigError(f"{name} must be one or more positive integers, got {value!r}")
    return out


def _betas(value) -> tuple[float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"adam_betas must be two numbers B1,B2, got {value!r}")
    if len(out) != 2 or not all(0.0 <= b < 1.0 for b in out):
        raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {value!r}")
    return out


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. ``latent_dims`` has one entry per stochastic layer.

    ``hidden`` is the encoder's hidden widths (x -> hidden -> z); the decoder mirrors it.
    ``kl_warmup_epochs``: the weight beta on log p(z) - log q(z|x) grows linearly from ~0 to 1
    over this many epochs (Sønderby et al. 2016; Bowman et al. 2016); 0 disables warm-up.
    ``noise`` / ``noise_type``: the corruption of the denoising autoencoder (``model="dae"``):
    ``masking`` zeroes each input with probability ``noise`` (in [0, 1)), ``gaussian`` adds
    ``noise`` * N(0, 1) (``noise`` >= 0). ``flow_depth``: number of IAF steps of ``guide="iaf"``.
    ``patience``: stop after this many epochs without a better validation ELBO (counted from the
    end of the warm-up; 0 = never stop early). ``schedule``: the learning rate per epoch,
    ``constant`` (``lr``) or ``burda`` (``lr * 10**(-i/7)`` for 3**i epochs, i = 0..7; Burda et
    al. 2016; see :mod:`ppl_vae.training.schedules`). ``adam_eps``, ``adam_betas``: Adam's epsilon
    and
    (beta1, beta2) (Burda et al. used eps = 1e-4). ``prior_init``: how the conditionals
    p(z_l | z_{l+1}) of a model with several stochastic layers start: ``random`` (PyTorch's
    default) or ``standard`` (N(0, I) for every parent value: the model starts as the one-layer
    VAE; see :meth:`ppl_vae.models.GaussianConditional.reset_to`). ``weight_init``: ``torch``
    (PyTorch's default), ``burda`` (the initialisation of Burda et al.'s code: Glorot weights,
    unit initial scales, decoder bias at the pixel marginals) or a ``+``-joined subset of
    ``glorot``, ``unit-scale``, ``pixel-bias`` (:mod:`ppl_vae.training.initialization`).
    """

    data: str = "digits"
    model: str = "vae"
    guide: str = "bottom-up"
    latent_dims: tuple[int, ...] = (2,)
    hidden: tuple[int, ...] = (256, 256)
    likelihood: str = "bernoulli"
    min_scale: float = 1e-2
    activation: str = "relu"
    objective: str = "trace"
    particles: int | None = None
    lr: float = 1e-3
    batch_size: int = 16
    epochs: int = 30
    seed: int = 0
    kl_warmup_epochs: int = 0
    noise: float = 0.25
    noise_type: str = "masking"
    flow_depth: int = 2
    options: dict = field(default_factory=dict)
    patience: int = 0
    schedule: str = "constant"
    adam_eps: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)
    prior_init: str = "random"
    weight_init: str = "torch"

    def __post_init__(self):
        self.latent_dims = _int_tuple(self.latent_dims, "latent_dims")
        self.hidden = _int_tuple(self.hidden, "hidden")
        if self.particles is not None:
            if int(self.particles) < 1:
                raise ConfigError(f"particles must be >= 1, got {self.particles}")
            self.particles = int(self.particles)
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("epochs", "kl_warmup_epochs", "seed"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not float(self.lr) > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        self.batch_size = int(self.batch_size)
        self.epochs, self.seed = int(self.epochs), int(self.seed)
        self.kl_warmup_epochs, self.lr = int(self.kl_warmup_epochs), float(self.lr)
        self.data = str(self.data)
        if ":" in str(self.model):  # your own factory: a file path is recorded absolute
            from ppl_vae.training.user_models import normalize_spec

            self.model = normalize_spec(self.model)
        from ppl_vae.guides.point import NOISE_TYPES

        if self.noise_type not in NOISE_TYPES:
            raise ConfigError(f"unknown noise type {self.noise_type!r}; choose one of "
                              f"{', '.join(NOISE_TYPES)}")
        try:
            self.noise = float(self.noise)
        except (TypeError, ValueError):
            raise ConfigError(f"noise must be a number, got {self.noise!r}") from None
        if self.noise_type == "masking" and not 0.0 <= self.noise < 1.0:
            raise ConfigError(f"masking noise is a probability in [0, 1), got {self.noise}")
        if self.noise_type == "gaussian" and not self.noise >= 0.0:
            raise ConfigError(f"gaussian noise is a standard deviation >= 0, got {self.noise}")
        if int(self.flow_depth) < 1:
            raise ConfigError(f"flow_depth must be >= 1, got {self.flow_depth}")
        self.flow_depth = int(self.flow_depth)
        from ppl_vae.models.hierarchical import PRIOR_INITS

        if self.prior_init not in PRIOR_INITS:
            raise ConfigError(f"unknown prior_init {self.prior_init!r}; choose one of "
                              f"{', '.join(PRIOR_INITS)}")
        from ppl_vae.training.initialization import weight_init_parts

        weight_init_parts(self.weight_init)
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        from ppl_vae.training.schedules import LR_SCHEDULES, check_schedule

        if int(self.patience) < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        self.patience = int(self.patience)
        if self.schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of "
                              f"{', '.join(LR_SCHEDULES)}")
        check_schedule(self.schedule, self.epochs)
        if not float(self.adam_eps) > 0:
            raise ConfigError(f"adam_eps must be > 0, got {self.adam_eps}")
        self.adam_eps = float(self.adam_eps)
        self.adam_betas = _betas(self.adam_betas)

    def likelihood_spec(self) -> dict:
        spec = {"name": self.likelihood}
        if self.likelihood == "gaussian":
            spec["min_scale"] = self.min_scale
        return spec

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["latent_dims"], d["hidden"] = list(self.latent_dims), list(self.hidden)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}")
        return cls(**d)

    # Fields that change the architecture or the meaning of the parameters, or how they started
    # (the initialisation): a checkpoint can only be resumed under a config that agrees on all.
    ARCHITECTURE = ("data", "model", "guide", "latent_dims", "hidden", "likelihood", "min_scale",
                    "activation", "flow_depth", "weight_init", "prior_init")

    def differences(self, other: "TrainConfig", ignore=("epochs",)) -> dict:
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}
