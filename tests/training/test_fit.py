"""``ppl_vae.fit``: any Pyro pair on data of any trailing shape (sequences under pyro.markov, as
Pyro's dmm writes them), from memory or a memory-mapped .npy, with checkpoints, exact resume,
callbacks and bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppl_vae
from ppl_vae.errors import DataError
from ppl_vae.training.callbacks import Callback

T, D, J = 4, 3, 2


def dmm_pair():
    torch.manual_seed(0)
    trans, emit, enc = nn.Linear(J, J), nn.Linear(J, D), nn.Linear(D, 2 * J)

    def model(xs):
        pyro.module("dmm", nn.ModuleList([trans, emit]))
        with pyro.plate("data"):
            z = xs.new_zeros(xs.shape[0], J)
            for t in pyro.markov(range(T)):
                z = pyro.sample(f"z_{t}", dist.Normal(trans(z), 1.0).to_event(1))
                pyro.sample(f"x_{t}", dist.Normal(emit(z), 1.0).to_event(1), obs=xs[:, t])

    def guide(xs):
        pyro.module("enc", enc)
        with pyro.plate("data"):
            for t in pyro.markov(range(T)):
                loc, log_scale = enc(xs[:, t]).chunk(2, -1)
                pyro.sample(f"z_{t}", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


class Rows(Callback):
    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, epoch, row, model, guide):
        self.epochs.append(epoch)


def test_sequences_from_a_memory_mapped_file_train_resume_exactly(tmp_path):
    xs = torch.randn(120, T, D, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "seq.npy"
    np.save(path, xs.numpy())
    model, guide = dmm_pair()
    rows = Rows()
    full = ppl_vae.fit(model, guide, path, epochs=3, batch_size=40, out=tmp_path / "full",
                       progress=False, callbacks=[rows])
    assert rows.epochs == [1, 2, 3]
    assert (tmp_path / "full" / "checkpoint.pt").is_file()
    assert full.metrics.valid_elbo.iloc[-1] > full.metrics.valid_elbo.iloc[0]
    pyro.clear_param_store()
    model, guide = dmm_pair()
    ppl_vae.fit(model, guide, path, epochs=1, batch_size=40, out=tmp_path / "half",
                progress=False)
    pyro.clear_param_store()
    model2, guide2 = dmm_pair()  # a fresh process: the pair rebuilt, an empty param store
    again = ppl_vae.fit(model2, guide2, path, epochs=3, out=tmp_path / "half", resume=True,
                        progress=False)
    assert again.metrics.valid_elbo.tolist() == pytest.approx(full.metrics.valid_elbo.tolist(),
                                                              abs=1e-9)


def test_fit_takes_any_registered_objective_and_explicit_validation_data():
    xs = torch.randn(60, T, D, generator=torch.Generator().manual_seed(2))
    model, guide = dmm_pair()
    res = ppl_vae.fit(model, guide, xs[:50], valid=xs[50:], objective="iwae-3", epochs=1,
                      batch_size=25, progress=False)
    assert np.isfinite(res.metrics.valid_elbo).all()
    with pytest.raises(DataError, match="valid points have shape"):
        ppl_vae.fit(model, guide, xs, valid=torch.zeros(5, T), progress=False)
    with pytest.raises(DataError, match="not a .npy file"):
        ppl_vae.fit(model, guide, "nowhere.npy", progress=False)


BIG = textwrap.dedent('''
    import sys, numpy as np, pyro, pyro.distributions as dist, torch
    from torch import nn
    import ppl_vae
    from ppl_vae.training.callbacks import Callback

    def rss_anon_mb():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

    class Peak(Callback):
        peak = 0.0
        def on_epoch_end(self, epoch, row, model, guide):
            Peak.peak = max(Peak.peak, rss_anon_mb())

    dec, enc = nn.Linear(2, 64), nn.Linear(64, 4)
    def model(x):
        pyro.module("dec", dec)
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec(z), 1.0).to_event(1), obs=x)
    def guide(x):
        pyro.module("enc", enc)
        loc, ls = enc(x).chunk(2, -1)
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal(loc, ls.exp()).to_event(1))
    before = rss_anon_mb()
    ppl_vae.fit(model, guide, sys.argv[1], epochs=1, batch_size=4000, progress=False,
                valid_fraction=0.01, callbacks=[Peak()])
    print(before, Peak.peak)
''')


@pytest.mark.slow
def test_a_file_larger_than_the_memory_budget_trains_in_bounded_memory(tmp_path):
    """A 256 MB memory-mapped .npy trains with the process's anonymous memory growing by far
    less than the file (minibatches are read as they are needed)."""
    n = 1_000_000
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 64))
    for i in range(0, n, 200_000):
        arr[i:i + 200_000] = np.random.default_rng(i).standard_normal((200_000, 64))
    arr.flush()
    del arr
    script = tmp_path / "big.py"
    script.write_text(BIG)
    r = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    before, peak = map(float, r.stdout.split()[-2:])
    file_mb = path.stat().st_size / 2**20
    assert file_mb > 240 and peak - before < 0.4 * file_mb, (before, peak, file_mb)


def masked_dmm_pair():
    """dmm's idiom: sequences with a mask (``{"x": (N, T, D), "mask": (N, T)}``), the steps past
    each sequence's end masked out with ``poutine.mask``."""
    torch.manual_seed(0)
    trans, emit, enc = nn.Linear(J, J), nn.Linear(J, D), nn.Linear(D, 2 * J)

    def model(batch):
        xs, mask = batch["x"], batch["mask"]
        pyro.module("dmm", nn.ModuleList([trans, emit]))
        with pyro.plate("data"):
            z = xs.new_zeros(xs.shape[0], J)
            for t in pyro.markov(range(T)):
                with pyro.poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Normal(trans(z), 1.0).to_event(1))
                    pyro.sample(f"x_{t}", dist.Normal(emit(z), 1.0).to_event(1),
                                obs=xs[:, t])

    def guide(batch):
        xs, mask = batch["x"], batch["mask"]
        pyro.module("enc", enc)
        with pyro.plate("data"):
            for t in pyro.markov(range(T)):
                loc, log_scale = enc(xs[:, t]).chunk(2, -1)
                with pyro.poutine.mask(mask=mask[:, t]):
                    pyro.sample(f"z_{t}", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide


def test_a_dictionary_of_data_and_mask_trains_and_resumes(tmp_path):
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, T + 1, (80,), generator=g)
    data = {"x": torch.randn(80, T, D, generator=g),
            "mask": torch.arange(T) < lengths[:, None]}
    model, guide = masked_dmm_pair()
    full = ppl_vae.fit(model, guide, data, epochs=2, batch_size=20, out=tmp_path / "full",
                       progress=False)
    assert np.isfinite(full.metrics.valid_elbo).all()
    pyro.clear_param_store()
    model, guide = masked_dmm_pair()
    ppl_vae.fit(model, guide, data, epochs=1, batch_size=20, out=tmp_path / "half",
                progress=False)
    pyro.clear_param_store()
    model, guide = masked_dmm_pair()
    again = ppl_vae.fit(model, guide, data, epochs=2, out=tmp_path / "half", resume=True,
                        progress=False)
    assert again.metrics.valid_elbo.tolist() == pytest.approx(full.metrics.valid_elbo.tolist(),
                                                              abs=1e-9)
    with pytest.raises(DataError, match="differ in length"):
        ppl_vae.fit(model, guide, {"x": data["x"], "mask": data["mask"][:5]}, progress=False)


class Sequences(torch.utils.data.Dataset):
    """A map-style dataset that builds each item when it is asked for (as one reading from disk
    would): only a minibatch of items is ever materialized."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return torch.randn(T, D, generator=torch.Generator().manual_seed(int(i)))


def test_a_torch_dataset_is_read_a_minibatch_at_a_time():
    data = Sequences(100)
    model, guide = dmm_pair()
    res = ppl_vae.fit(model, guide, data, epochs=2, batch_size=30, progress=False)
    assert np.isfinite(res.metrics.valid_elbo).all()
    # the same points as a tensor give the same training
    pyro.clear_param_store()
    model, guide = dmm_pair()
    tensor = torch.stack([data[i] for i in range(100)])
    same = ppl_vae.fit(model, guide, tensor, epochs=2, batch_size=30, progress=False)
    assert same.metrics.valid_elbo.tolist() == pytest.approx(res.metrics.valid_elbo.tolist(),
                                                             abs=1e-5)


def test_a_dataloader_is_taken_for_its_dataset_and_tensorboard_is_optional(tmp_path):
    from ppl_vae.training.callbacks import TensorBoard

    data = Sequences(40)
    model, guide = dmm_pair()
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    res = ppl_vae.fit(model, guide, loader, epochs=1, batch_size=20, progress=False)
    assert len(res.metrics) == 1
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        from ppl_vae.errors import ConfigError

        with pytest.raises(ConfigError, match="tensorboard package"):
            TensorBoard(tmp_path / "tb")
        return
    ppl_vae.fit(model, guide, data, epochs=1, batch_size=20, progress=False,
                callbacks=[TensorBoard(tmp_path / "tb")])
    assert any((tmp_path / "tb").iterdir())
