"""Data sets as (N, D) float32 tensors in a train/valid/test split.

Sources (``load_dataset(spec)``):

``digits`` (the embedded default)
    scikit-learn's ``load_digits``: 1797 real handwritten 8x8 digits, grey levels 0..16 scaled to
    [0, 1], no download. Split by a fixed permutation (numpy seed 0): 1297 train / 250 valid /
    250 test.
``binarized-mnist``
    the statically binarized MNIST of Larochelle & Murray (2011) as an ``.npz`` with uint8 0/1
    arrays ``train`` (50000x784), ``valid``, ``test`` (10000x784). Looked up at
    ``$PPL_VAE_BINARIZED_MNIST``, ``./binarized_mnist.npz``, ``../shared/data/binarized_mnist.npz``;
    or pass the path itself.
``mnist`` / ``mnist-dynamic`` / ``fashion-mnist``
    through ``torchvision.datasets`` (downloaded into ``root`` when missing and ``download=True``);
    grey values / 255; the last 10000 of the 60000 training images are the validation split.
    ``mnist-dynamic`` is ``mnist`` under its name in the literature: under a Bernoulli likelihood
    grey data are binarized dynamically (below), so it is the *dynamically* binarized MNIST of
    Burda et al. (2016); any grey ``.npz``/``.npy`` of your own is treated the same way.
a path to ``.npz``
    arrays ``train``, ``valid``, ``test`` (all three required), each (N, D) or (N, H, W).
a path to ``.npy``
    one array (N, D) or (N, H, W), split 80/10/10 by a fixed permutation.

Grey values and the Bernoulli likelihood: data that are not exactly 0/1 are *dynamically*
binarized for training (a fresh x ~ Bernoulli(grey) for every minibatch, as in Burda et al. 2016)
and *statically* binarized once, with a fixed seed, for validation/test evaluation
(:meth:`Dataset.split_for`), so reported numbers are exact likelihoods of fixed binary data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import DataError

__all__ = ["Dataset", "load_dataset", "load_split", "as_evaluated", "DATASETS",
           "find_binarized_mnist", "EVAL_BINARIZATION_SEED"]

DATASETS = ("digits", "binarized-mnist", "mnist", "mnist-dynamic", "fashion-mnist")
SPLITS = ("train", "valid", "test")
EVAL_BINARIZATION_SEED = 1234


@dataclass
class Dataset:
    """A train/valid/test split of flattened images, float32 in [0, 1] (or real for Gaussian)."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int]
    labels: dict | None = None  # optional {"train": (N,) int64 tensor, "valid": ..., "test": ...}

    @property
    def x_dim(self) -> int:
        """Values per data point (the product of the trailing dimensions; summed over the
        tensors of a :class:`~ppl_vae.io.rows.Rows`)."""
        if hasattr(self.train, "numel_per_point"):
            return self.train.numel_per_point()
        return int(self.train[0].numel())

    @property
    def binary(self) -> bool:
        """True when every value is exactly 0 or 1."""
        return all(bool(((t == 0) | (t == 1)).all()) for t in (self.train, self.valid, self.test))

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise DataError(f"{self.name}: unknown split {name!r}; choose one of {SPLITS}")
        return getattr(self, name)

    def labels_for(self, name: str) -> torch.Tensor:
        """The class labels of split ``name`` (int64, one per point); :class:`DataError` when the
        data set carries none (binarized MNIST) or not for that split."""
        self.split(name)
        if not self.labels or self.labels.get(name) is None:
            have = sorted(k for k, v in (self.labels or {}).items() if v is not None)
            raise DataError(
                f"{self.name}: no labels for the {name!r} split"
                + (f" (labels only for {have})" if have else
                   " (this data set has no labels; digits has them, an .npz needs "
                   "'train_labels'/'valid_labels'/'test_labels' arrays)"))
        return self.labels[name]

    def split_for(self, name: str, likelihood) -> torch.Tensor:
        """The split as the likelihood must see it at evaluation time.

        For a binary likelihood and grey data: a static binarization with a fixed seed
        (:data:`EVAL_BINARIZATION_SEED`), identical across calls, runs and machines.
        """
        return as_evaluated(self.split(name), name, likelihood)


def as_evaluated(x: torch.Tensor, name: str, likelihood) -> torch.Tensor:
    """Split ``name`` (the tensor ``x``) as ``likelihood`` sees it at evaluation time: grey data
    under a binary likelihood statically binarized with a fixed seed (:meth:`Dataset.split_for`)."""
    if getattr(likelihood, "binary", False) and not bool(((x == 0) | (x == 1)).all()):
        gen = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED + SPLITS.index(name))
        x = torch.bernoulli(x, generator=gen)
    return x


def _as_images(arr, source: str, key: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise DataError(f"{source}: {key!r} has non-numeric dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise DataError(
            f"{source}: {key!r} must have shape (N, D) or (N, H, W), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{source}: split {key!r} is empty")
    if arr.shape[1] == 0:
        raise DataError(f"{source}: {key!r} has zero features per data point")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(f"{source}: {key!r} contains NaN or infinite values ({bad} rows)")
    return arr


def _image_shape(d: int, shape3=None) -> tuple[int, int]:
    if shape3 is not None:
        return tuple(int(s) for s in shape3)
    side = int(round(d**0.5))
    return (side, side) if side * side == d else (1, d)


def _fixed_split(arr: np.ndarray, n_valid: int, n_test: int, seed: int = 0):
    perm = np.random.RandomState(seed).permutation(arr.shape[0])
    arr = arr[perm]
    n_train = arr.shape[0] - n_valid - n_test
    if n_train < 1 or n_valid < 1 or n_test < 1:
        raise DataError(f"too few data points ({arr.shape[0]}) for a train/valid/test split")
    return arr[:n_train], arr[n_train : n_train + n_valid], arr[n_train + n_valid :]


def _make(name, train, valid, test, image_shape, source, labels=None) -> Dataset:
    dims = {k: a.shape[1] for k, a in zip(SPLITS, (train, valid, test))}
    if len(set(dims.values())) != 1:
        raise DataError(f"{source}: splits have different numbers of features: {dims}")
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (train, valid, test)]
    if labels is not None:
        labels = {k: None if v is None else torch.as_tensor(np.asarray(v), dtype=torch.int64)
                  for k, v in labels.items()}
    return Dataset(name, *t, image_shape=tuple(image_shape), labels=labels)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    arr = bunch.data.astype(np.float32) / 16.0
    # the same fixed permutation splits the images and their class labels 0..9
    labels = dict(zip(SPLITS, _fixed_split(bunch.target.astype(np.int64), 250, 250)))
    return _make("digits", *_fixed_split(arr, 250, 250), (8, 8), "digits", labels)


LABEL_KEYS = ("{}_labels", "y_{}", "{}_y")  # accepted names of an .npz's optional label arrays


def _npz_labels(f, keys, raw, source) -> dict | None:
    """Optional integer labels ``train_labels`` / ``y_train`` / ``train_y`` (per split) of an .npz;
    a label array must hold one integer per data point."""
    out = {}
    for split in SPLITS:
        key = next((p.format(split) for p in LABEL_KEYS if p.format(split) in keys), None)
        if key is None:
            out[split] = None
            continue
        lab = np.asarray(f[key])
        if lab.ndim != 1 or lab.shape[0] != raw[split].shape[0]:
            raise DataError(f"{source}: labels {key!r} must have shape ({raw[split].shape[0]},), "
                            f"got {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            if not (np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab))):
                raise DataError(f"{source}: labels {key!r} must be integers, got {lab.dtype}")
        out[split] = lab.astype(np.int64)
    return out if any(v is not None for v in out.values()) else None


def find_binarized_mnist() -> Path | None:
    """Where the binarized-MNIST .npz is, or None (see module docstring for the search order)."""
    candidates = [os.environ.get("PPL_VAE_BINARIZED_MNIST"), "binarized_mnist.npz",
                  "../shared/data/binarized_mnist.npz",
                  Path(__file__).resolve().parents[1].parent / "shared/data/binarized_mnist.npz"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def _npz(path: Path, name: str) -> Dataset:
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            missing = [k for k in SPLITS if k not in keys]
            if missing:
                raise DataError(
                    f"{source}: missing key(s) {missing}; an .npz data set needs arrays "
                    f"'train', 'valid' and 'test' (found {sorted(keys)})"
                )
            raw = {k: f[k] for k in SPLITS}
            labels = _npz_labels(f, keys, raw, source)
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
        raise DataError(f"{source}: cannot read as .npz ({type(exc).__name__}: {exc})") from exc
    shape3 = raw["train"].shape[1:] if raw["train"].ndim == 3 else None
    arrs = [_as_images(raw[k], source, k) for k in SPLITS]
    return _make(name, *arrs, _image_shape(arrs[0].shape[1], shape3), source, labels)


def _npy(path: Path) -> Dataset:
    source = str(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{source}: cannot read as .npy ({type(exc).__name__}: {exc})") from exc
    shape3 = raw.shape[1:] if raw.ndim == 3 else None
    arr = _as_images(raw, source, "array")
    n = arr.shape[0]
    n_valid = n_test = max(1, n // 10)
    splits = _fixed_split(arr, n_valid, n_test)
    return _make(path.stem, *splits, _image_shape(arr.shape[1], shape3), source)


def _torchvision(name: str, root, download: bool) -> Dataset:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST,
           "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    root = Path(root or os.environ.get("PPL_VAE_DATA_ROOT", "~/.cache/ppl_vae")).expanduser()
    try:
        train_full = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as exc:  # "Dataset not found. You can use download=True ..."
        raise DataError(f"{name}: not found under {root} and download is off ({exc})") from exc
    except Exception as exc:  # corrupt IDX file, network error, ...
        raise DataError(f"{name} under {root}: cannot load ({type(exc).__name__}: {exc})") from exc
    tr = train_full.data.reshape(len(train_full.data), -1).numpy()
    te = test.data.reshape(len(test.data), -1).numpy()
    n_valid = min(10000, max(1, tr.shape[0] // 6))
    arrs = [_as_images(a, f"{name} under {root}", k) / 255.0
            for k, a in zip(SPLITS, (tr[:-n_valid], tr[-n_valid:], te))]
    ytr, yte = np.asarray(train_full.targets), np.asarray(test.targets)
    labels = dict(zip(SPLITS, (ytr[:-n_valid], ytr[-n_valid:], yte)))
    return _make(name, *arrs, tuple(train_full.data.shape[1:]), name, labels)


def load_dataset(spec: str = "digits", likelihood=None, root=None,
                 download: bool = True) -> Dataset:
    """Load a data set by name or path (see the module docstring); validate it for ``likelihood``.

    Raises :class:`~ppl_vae.errors.DataError` naming the file and the problem for a missing file,
    a missing key, wrong rank, an empty split, NaN/inf, or values outside the likelihood's support.
    """
    spec = str(spec)
    if spec == "digits":
        ds = _digits()
    elif spec == "binarized-mnist":
        path = find_binarized_mnist()
        if path is None:
            raise DataError(
                "binarized-mnist: file not found; set PPL_VAE_BINARIZED_MNIST or pass the path to "
                "an .npz with uint8 0/1 arrays 'train' (50000x784), 'valid', 'test'"
            )
        ds = _npz(path, "binarized-mnist")
    elif spec in ("mnist", "mnist-dynamic", "fashion-mnist"):
        ds = _torchvision(spec.replace("-dynamic", ""), root, download)
    else:
        path = Path(spec).expanduser()
        if path.suffix not in (".npz", ".npy"):
            raise DataError(
                f"unknown data set {spec!r}: use one of {', '.join(DATASETS)} or a path to "
                ".npz/.npy"
            )
        if not path.is_file():
            raise DataError(f"{spec}: no such file")
        ds = _npz(path, path.stem) if path.suffix == ".npz" else _npy(path)
    if likelihood is not None:
        from ppl_vae.models.likelihoods import make_likelihood

        lik = make_likelihood(likelihood)
        for k in SPLITS:
            lik.check_support(ds.split(k), source=f"{spec} [{k}]")
    return ds


def load_split(spec: str, name: str, likelihood=None, limit: int | None = None) -> torch.Tensor:
    """Split ``name`` of data set ``spec``, validated for ``likelihood`` as :func:`load_dataset`
    validates it: the same tensor as ``load_dataset(spec, likelihood).split(name)``. An
    ``.npz`` (and ``binarized-mnist``) reads that one array only (evaluating the 10,000 test
    points of binarized MNIST need not read, convert and check the 50,000 training points);
    other sources load the whole data set. ``limit``: only the first ``limit`` points are read,
    converted and checked (``load_dataset(spec, likelihood).split(name)[:limit]`` where the
    whole split is valid)."""
    spec = str(spec)
    path = find_binarized_mnist() if spec == "binarized-mnist" else Path(spec).expanduser()
    if name not in SPLITS or path is None or path.suffix != ".npz" or not path.is_file():
        return load_dataset(spec, likelihood=likelihood).split(name)[:limit]
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = f[name][:limit] if name in f.files else None
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
        raise DataError(f"{source}: cannot read as .npz ({type(exc).__name__}: {exc})") from exc
    if raw is None:  # load_dataset's error
        return load_dataset(spec, likelihood=likelihood).split(name)[:limit]
    x = torch.from_numpy(np.ascontiguousarray(_as_images(raw, source, name)))
    if likelihood is not None:
        from ppl_vae.models.likelihoods import make_likelihood

        make_likelihood(likelihood).check_support(x, source=f"{spec} [{name}]")
    return x


def binary_splits(spec: str, split: str = "valid", limit: int = 0):
    """``(train, evaluation, dataset)``: the data as a Bernoulli likelihood sees it (grey data
    statically binarized with the fixed seed of :meth:`Dataset.split_for`); ``evaluation`` is
    ``split``, cut to its first ``limit`` points when ``limit`` > 0."""
    from ppl_vae.models import BernoulliLikelihood

    ds = load_dataset(spec, likelihood="bernoulli")
    lik = BernoulliLikelihood()
    train, evaluation = ds.split_for("train", lik), ds.split_for(split, lik)
    return train, (evaluation[: int(limit)] if limit else evaluation), ds
