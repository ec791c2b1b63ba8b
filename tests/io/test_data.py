"""Data sources and every kind of bad data: each error names the file and the problem."""

import gzip
import struct

import numpy as np
import pytest
import torch

import ppl_vae
from ppl_vae import DataError, load_dataset, train


def test_digits_split_is_documented_and_fixed():
    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1297, 250, 250)
    assert ds.x_dim == 64 and ds.image_shape == (8, 8)
    assert float(ds.train.min()) == 0.0 and float(ds.train.max()) == 1.0
    assert not ds.binary
    assert torch.equal(ds.train, load_dataset("digits").train)


def test_eval_binarization_is_static(digits):
    from ppl_vae.models import make_likelihood

    b1 = digits.split_for("test", make_likelihood("bernoulli"))
    b2 = digits.split_for("test", make_likelihood("bernoulli"))
    assert torch.equal(b1, b2) and set(b1.unique().tolist()) == {0.0, 1.0}
    # mean preserved in expectation: |mean(b) - mean(grey)| within 4 binomial s.e.
    se = (digits.test.mean() * (1 - digits.test.mean()) / digits.test.numel()).sqrt()
    assert abs(b1.mean() - digits.test.mean()) < 4 * se
    assert torch.equal(digits.split_for("test", make_likelihood("gaussian")), digits.test)


def test_binarized_mnist(bmnist_path):
    ds = load_dataset(str(bmnist_path), likelihood="bernoulli")
    assert ds.train.shape == (50000, 784) and ds.valid.shape == ds.test.shape == (10000, 784)
    assert ds.binary and ds.image_shape == (28, 28)
    assert 0.1 < float(ds.train.mean()) < 0.16


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def good_arrays():
    rng = np.random.RandomState(0)
    return {k: (rng.rand(n, 16) > 0.5).astype(np.uint8)
            for k, n in (("train", 30), ("valid", 5), ("test", 5))}


def test_user_npz_and_npy(tmp_path):
    ds = load_dataset(str(_npz(tmp_path, **good_arrays())), likelihood="bernoulli")
    assert ds.train.shape == (30, 16) and ds.image_shape == (4, 4) and ds.binary
    arr = np.random.RandomState(0).rand(50, 3, 5).astype(np.float32)
    np.save(tmp_path / "imgs.npy", arr)
    ds = load_dataset(str(tmp_path / "imgs.npy"), likelihood="gaussian")
    assert ds.image_shape == (3, 5) and (len(ds.train), len(ds.valid), len(ds.test)) == (40, 5, 5)


BAD = {
    "missing-key": (lambda a: {k: v for k, v in a.items() if k != "valid"},
                    r"missing key\(s\) \['valid'\]"),
    "wrong-rank": (lambda a: {**a, "train": a["train"].reshape(30, 2, 2, 4)},
                   r"'train' must have shape \(N, D\) or \(N, H, W\), got shape \(30, 2, 2, 4\)"),
    "empty-split": (lambda a: {**a, "test": a["test"][:0]}, r"split 'test' is empty"),
    "nan": (lambda a: {**a, "valid": np.where(np.eye(5, 16) > 0, np.nan, a["valid"])},
            r"'valid' contains NaN or infinite values \(5 rows\)"),
    "inf": (lambda a: {**a, "train": np.full((30, 16), np.inf)}, r"NaN or infinite"),
    "out-of-range": (lambda a: {**a, "train": a["train"] * 255},
                     r"values outside \[0, 1\] \(min 0, max 255\).*Bernoulli"),
    "size-mismatch": (lambda a: {**a, "test": np.zeros((5, 9))},
                      r"different numbers of features"),
    "strings": (lambda a: {**a, "train": np.array([["a"] * 16] * 30)}, r"non-numeric dtype"),
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_npz_names_file_and_problem(tmp_path, problem):
    make, message = BAD[problem]
    path = _npz(tmp_path, f"{problem}.npz", **make(good_arrays()))
    with pytest.raises(DataError, match=message) as err:
        load_dataset(str(path), likelihood="bernoulli")
    assert f"{problem}.npz" in str(err.value)


def test_gaussian_likelihood_accepts_values_outside_unit_interval(tmp_path):
    a = good_arrays()
    path = _npz(tmp_path, **{**a, "train": a["train"] * 3.0 - 1.0})
    assert load_dataset(str(path), likelihood="gaussian").train.min() == -1.0


@pytest.mark.parametrize("spec,message", [
    ("nope", r"unknown data set 'nope'"),
    ("missing.npz", r"missing.npz: no such file"),
])
def test_unknown_or_missing_sources(spec, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def test_corrupt_npz_and_npy(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"bad.npz: cannot read as .npz"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.save(tmp_path / "vec.npy", np.zeros(10))
    with pytest.raises(DataError, match=r"vec.npy: 'array' must have shape"):
        load_dataset(str(tmp_path / "vec.npy"))


def _write_idx(path, array, gz=False):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_sources_on_a_tiny_local_idx_file(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    train_imgs = rng.randint(0, 256, size=(12, 28, 28))
    test_imgs = rng.randint(0, 256, size=(4, 28, 28))
    _write_idx(raw / "train-images-idx3-ubyte", train_imgs)
    _write_idx(raw / "train-labels-idx1-ubyte", rng.randint(0, 10, size=12))
    _write_idx(raw / "t10k-images-idx3-ubyte", test_imgs)
    _write_idx(raw / "t10k-labels-idx1-ubyte", rng.randint(0, 10, size=4))
    ds = load_dataset(name, likelihood="bernoulli", root=tmp_path, download=False)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (10, 2, 4)
    assert ds.image_shape == (28, 28)
    assert torch.allclose(ds.test, torch.tensor(test_imgs.reshape(4, -1) / 255.0,
                                                 dtype=torch.float32))


def test_torchvision_source_missing_without_download(tmp_path):
    with pytest.raises(DataError, match=r"mnist: not found under"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_grey_data_is_binarized_afresh_each_minibatch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    grey = {k: rng.uniform(0.2, 0.8, size=(n, 16)).astype(np.float32)
            for k, n in (("train", 40), ("valid", 10), ("test", 10))}
    path = tmp_path / "grey.npz"
    np.savez(path, **grey)
    seen = []
    orig = ppl_vae.infer.svi.SVI.step

    def spy(self, xb, **kw):
        seen.append(xb.clone())
        return orig(self, xb, **kw)

    monkeypatch.setattr(ppl_vae.infer.svi.SVI, "step", spy)
    res = train(data=str(path), latent_dims=(2,), hidden=(8,), batch_size=40, epochs=2,
                progress=False, reports=False)
    assert len(seen) == 2 and all(((s == 0) | (s == 1)).all() for s in seen)
    # the same 40 points in both epochs (one batch each, permuted): rows sorted by their grey
    # values differ between the two binarizations in many pixels
    assert 0.2 < (seen[0].sum() / seen[0].numel()).item() < 0.8
    assert not torch.equal(seen[0].sum(0), seen[1].sum(0))
    x_valid = res.dataset.split_for("valid", res.model.likelihood)
    assert torch.equal(x_valid, res.dataset.split_for("valid", res.model.likelihood))  # static
    assert ((x_valid == 0) | (x_valid == 1)).all()


def test_mnist_dynamic_without_the_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="mnist: not found under"):
        load_dataset("mnist-dynamic", root=tmp_path, download=False)


def test_load_split_reads_one_split_as_load_dataset_does(tmp_path):
    from ppl_vae.io.data import as_evaluated, load_split
    from ppl_vae.models import make_likelihood

    path = str(_npz(tmp_path, **good_arrays()))
    ds = load_dataset(path, likelihood="bernoulli")
    for name in ("train", "valid", "test"):
        assert torch.equal(load_split(path, name, likelihood={"name": "bernoulli"}),
                           ds.split(name))
    assert torch.equal(load_split(path, "train", limit=7), ds.train[:7])
    grey = {k: v * 0.5 for k, v in good_arrays().items()}  # grey: binarized for evaluation
    gpath = str(_npz(tmp_path, "grey.npz", **grey))
    lik = make_likelihood("bernoulli")
    assert torch.equal(as_evaluated(load_split(gpath, "test"), "test", lik),
                       load_dataset(gpath).split_for("test", lik))
    with pytest.raises(DataError, match="outside"):  # the support is checked, as by load_dataset
        load_split(str(_npz(tmp_path, "big.npz", **{**good_arrays(), "test": grey["test"] * 4})),
                   "test", likelihood={"name": "bernoulli"})
    with pytest.raises(DataError, match="missing key"):
        load_split(str(_npz(tmp_path, "two.npz", train=grey["train"], valid=grey["valid"])),
                   "test")
    assert torch.equal(load_split("digits", "test", limit=4), load_dataset("digits").test[:4])
