import os
from pathlib import Path

import pyro
import pytest
import torch

# Test networks are tiny: one intra-op thread is as fast as two, and several torch processes
# sharing 2 cores with OpenMP spin-waiting threads slow each other down by orders of magnitude.
torch.set_num_threads(int(os.environ.get("PPL_VAE_TEST_THREADS", "1")))

ROOT = Path(__file__).resolve().parents[1]
BINARIZED_MNIST = ROOT.parent / "shared" / "data" / "binarized_mnist.npz"


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture
def bmnist_path():
    if not BINARIZED_MNIST.is_file():
        pytest.skip(f"binarized MNIST not present at {BINARIZED_MNIST}")
    return BINARIZED_MNIST


@pytest.fixture(scope="session")
def digits():
    from ppl_vae.io.data import load_dataset

    return load_dataset("digits", likelihood="bernoulli")


@pytest.fixture
def tiny_digits(digits):
    """A 200/50/50-point slice of digits, for fast training tests."""
    from ppl_vae.io.data import Dataset

    return Dataset("digits", digits.train[:200], digits.valid[:50], digits.test[:50],
                   digits.image_shape)


def assert_close(actual, expected, atol=1e-6, rtol=1e-6, msg=""):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol), (
        f"{msg}\nactual={actual}\nexpected={expected}"
    )
