r"""``fit``: train any Pyro model/guide pair on any data with ppl_vae's training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.io.data import Dataset
from ppl_vae.io.rows import Rows
from ppl_vae.training.builders import MODEL_FAMILIES
from ppl_vae.training.user_models import PyroProgram

__all__ = ["fit", "FIT_MODEL"]

#: The model family name a :func:`fit` run records in its config.
FIT_MODEL = "fit"
_PAIR: dict = {}


def _fit_family(config, x_dim):
    if "pair" not in _PAIR:
        raise ConfigError("this run was trained with ppl_vae.fit(model, guide, ...): rebuild it "
                          "by calling fit again with the same model and guide (resume=True)")
    return _PAIR["pair"]


MODEL_FAMILIES[FIT_MODEL] = _fit_family


def _as_tensor(data, what: str) -> torch.Tensor:
    """A tensor of shape (N, ...) from a tensor, an array, or a ``.npy`` path (memory-mapped:
    minibatches are read from disk as they are needed)."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.suffix != ".npy" or not path.is_file():
            raise DataError(f"{what}: {path} is not a .npy file")
        data = np.load(path, mmap_mode="r")
    if isinstance(data, np.ndarray):
        if not np.issubdtype(data.dtype, np.number):
            raise DataError(f"{what}: a numeric array is needed, got dtype {data.dtype}")
        if data.dtype != np.float32 and not isinstance(data, np.memmap):
            data = data.astype(np.float32)
        import warnings

        with warnings.catch_warnings():  # a read-only memory map: never written to
            warnings.simplefilter("ignore", UserWarning)
            data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{what}: expected a tensor, an array or a .npy path, got "
                        f"{type(data).__name__}")
    if data.dim() < 1 or data.shape[0] < 1:
        raise DataError(f"{what}: needs at least one data point, got shape {tuple(data.shape)}")
    return data


def _data(data, what: str):
    """A tensor (from a tensor, an array or a ``.npy`` path), or :class:`Rows` for a
    dictionary of tensors or a map-style dataset (a ``DataLoader``'s dataset: the loop draws
    its own minibatches)."""
    from torch.utils.data import DataLoader

    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, (str, Path, np.ndarray, torch.Tensor)):
        return _as_tensor(data, what)
    rows = Rows(data)
    if len(rows) < 1:
        raise DataError(f"{what}: needs at least one data point")
    return rows


def _splits(data, valid, valid_fraction: float):
    x = _data(data, "data")
    if valid is not None:
        v = _data(valid, "valid")
        if isinstance(x, Rows) or isinstance(v, Rows):
            return x, v
        if tuple(v.shape[1:]) != tuple(x.shape[1:]):
            raise DataError(f"valid points have shape {tuple(v.shape[1:])}, the data "
                            f"{tuple(x.shape[1:])}")
        return x, v
    n_valid = max(1, int(round(valid_fraction * x.shape[0])))
    if n_valid >= x.shape[0]:
        raise DataError(f"data: {x.shape[0]} points are too few to hold out {n_valid} for "
                        "validation; pass valid=")
    n = x.shape[0]
    if isinstance(x, Rows):
        return x.subset(0, n - n_valid), x.subset(n - n_valid, n)
    return x[:-n_valid], x[-n_valid:]


def fit(model, guide, data, *, objective: str = "trace", out=None, valid=None,
        valid_fraction: float = 0.1, epochs: int = 10, batch_size: int = 100,
        lr: float = 1e-3, particles: int | None = None, patience: int = 0, seed: int = 0,
        resume: bool = False, overwrite: bool = False, progress: bool = True, callbacks=(),
        device="cpu", **config):
    r"""Train the Pyro pair ``model(x)`` / ``guide(x)`` on ``data`` with the loop of
    :func:`ppl_vae.train`: the same checkpoints (``out/checkpoint.pt``, ``best.pt``),
    ``resume``, early stopping (``patience``), ``metrics.csv``, progress bar, callbacks
    (:class:`~ppl_vae.training.callbacks.Callback`, e.g. a TensorBoard writer's ``on_epoch``)
    and torch.distributed data parallelism.

    Minibatches of ``batch_size`` points are drawn from a fresh permutation each epoch; the pair
    is run on them under :class:`~ppl_vae.poutine.minibatch.MinibatchScale`, so a model written
    for the whole data set (``pyro.plate("data")``, with or without a size) gives the unbiased
    full-data objective; global latents are left unscaled.

    :param model: a Pyro model taking the data (a minibatch) as its first argument.
    :param guide: its guide.
    :param data: the training points, shape ``(N, ...)`` with any trailing shape (images
        ``(N, C, H, W)``, sequences ``(N, T, D)``): a tensor, a NumPy array, or the path of a
        ``.npy`` file, which is memory-mapped (minibatches are read as needed); or a dictionary
        of tensors with a common first dimension (data and mask: the model then gets the
        dictionary of a minibatch's entries), or a map-style :class:`torch.utils.data.Dataset`
        whose items are read and collated a minibatch at a time (:class:`~ppl_vae.io.rows.Rows`;
        a ``DataLoader`` is taken for its dataset).
    :param str objective: a registered objective name (:func:`ppl_vae.available_objectives`).
    :param out: the run directory (nothing is written without one).
    :param valid: validation points; default the last ``valid_fraction`` of ``data``.
    :param int epochs: epochs to train (with ``resume``, the total).
    :param config: further :class:`~ppl_vae.training.config.TrainConfig` fields
        (``kl_warmup_epochs``, ``schedule``, ``adam_eps``, ...).
    :returns: the metrics, the trained model and guide (wrapped as ``nn.Module`` s).
    :rtype: ~ppl_vae.training.loop.TrainResult

    Example::

        import pyro, pyro.distributions as dist, torch
        from torch import nn
        from ppl_vae import fit

        dec, enc = nn.Linear(2, 6), nn.Linear(6, 4)

        def model(x):
            pyro.module("dec", dec)
            with pyro.plate("data"):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)

        def guide(x):
            pyro.module("enc", enc)
            loc, log_scale = enc(x).chunk(2, -1)
            with pyro.plate("data"):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

        result = fit(model, guide, torch.randn(200, 6), epochs=2, batch_size=50,
                     progress=False)
        result.metrics  # epoch, train_elbo, valid_elbo, seconds
    """
    from ppl_vae.training.loop import train

    x_train, x_valid = _splits(data, valid, valid_fraction)
    if not callable(model) or not callable(guide):
        raise ConfigError("fit(model, guide, data): model and guide must be callables")
    _PAIR["pair"] = (PyroProgram(model), PyroProgram(guide))
    if isinstance(x_train, Rows):
        image_shape = (1, 1)
    else:
        image_shape = (tuple(x_train.shape[1:]) if x_train.dim() == 3
                       else (1, int(x_train[0].numel())))
    dataset = Dataset("fit", x_train, x_valid, x_valid, image_shape)
    settings = dict(data="fit", model=FIT_MODEL, objective=objective, epochs=epochs,
                    batch_size=batch_size, lr=lr, particles=particles, patience=patience,
                    seed=seed, **config)
    if resume:
        settings = {"epochs": epochs}
    return train(None if resume else settings, out, resume=resume, overwrite=overwrite,
                 progress=progress, dataset=dataset, callbacks=callbacks, device=device,
                 **(settings if resume else {}))
