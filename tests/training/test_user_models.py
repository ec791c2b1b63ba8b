"""Your own model/guide pair by ``module:factory`` / ``file.py:factory``, written the way Pyro's
examples write it (functions, ``pyro.module`` in model and guide, a data plate without a size,
a global ``pyro.param``), through training, resume, reload and the CLI."""

import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_vae
from ppl_vae.errors import ConfigError
from ppl_vae.poutine.minibatch import MinibatchScale
from ppl_vae.training.runs import load_run
from ppl_vae.training.user_models import load_factory

USER_FILE = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn
    from torch.distributions import constraints


    def make(x_dim, z_dim=2):
        decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
        encoder = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, 2 * z_dim))

        def model(x):
            pyro.module("decoder", decoder)
            sigma = pyro.param("sigma", torch.tensor(0.5), constraint=constraints.positive)
            with pyro.plate("data"):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(decoder(z), sigma).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", encoder)
            loc, log_scale = encoder(x).chunk(2, -1)
            with pyro.plate("data"):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

        return model, guide
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_vae.py"
    path.write_text(USER_FILE)
    return path


def test_minibatch_scale_scales_local_sites_only():
    def model(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data"):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x = torch.randn(4)
    with MinibatchScale(num_data=40, batch_size=4), pyro.poutine.trace() as tr:
        model(x)
    assert tr.trace.nodes["w"]["scale"] == 1.0
    assert tr.trace.nodes["x"]["scale"] == 10.0


def test_a_file_factory_trains_resumes_and_reloads(user_file, tmp_path, tiny_digits):
    spec = f"{user_file}:make"
    out = tmp_path / "run"
    full = ppl_vae.train(dict(data="digits", model=spec, epochs=2, batch_size=64), out=out,
                         dataset=tiny_digits, progress=False, reports=False)
    assert full.config.model == f"{user_file.resolve()}:make"
    sigma = float(pyro.param("sigma").detach())
    assert sigma != 0.5 and torch.isfinite(torch.tensor(full.metrics.valid_elbo)).all()
    # exact resume: 1 epoch, then 1 more, equals 2 epochs at once
    pyro.clear_param_store()
    half = tmp_path / "half"
    ppl_vae.train(dict(data="digits", model=spec, epochs=1, batch_size=64), out=half,
                  dataset=tiny_digits, progress=False, reports=False)
    pyro.clear_param_store()
    again = ppl_vae.train(None, out=half, resume=True, epochs=2, dataset=tiny_digits,
                          progress=False, reports=False)
    assert again.metrics.valid_elbo.tolist() == pytest.approx(full.metrics.valid_elbo.tolist(),
                                                              abs=1e-9)
    # reload in a clean param store: the global pyro.param comes back with the weights
    pyro.clear_param_store()
    run = load_run(out, dataset=tiny_digits)
    x = tiny_digits.test[:5]
    run.model(x)
    assert float(pyro.param("sigma").detach()) == pytest.approx(sigma, abs=1e-7)


def test_the_cli_trains_a_user_model(user_file, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "ppl_vae", "train", "--data", "digits", "--model",
                        f"{user_file}:make", "--epochs", "1", "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "checkpoint.pt").is_file()


@pytest.mark.parametrize("spec,needle", [
    ("nosuchfile.py:make", "no such file"),
    ("json:nothing", "has no callable"),
    ("no_such_module_xyz:f", "cannot import"),
    ("json:", "expected module:factory"),
])
def test_bad_specs_name_the_flag(spec, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_factory(spec)
    assert "--model" in str(info.value)


GLOBAL_FILE = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn
    from torch.distributions import constraints


    def make(x_dim, z_dim=2):
        """A VAE with a global offset m shared by every image (a global latent)."""
        decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
        encoder = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, 2 * z_dim))

        def model(x):
            pyro.module("decoder", decoder)
            m = pyro.sample("m", dist.Normal(x.new_zeros(x_dim), 1.0).to_event(1))
            with pyro.plate("data"):
                z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(decoder(z) + m, 0.5).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", encoder)
            loc = pyro.param("m_loc", torch.zeros(x_dim))
            scale = pyro.param("m_scale", 0.1 * torch.ones(x_dim), constraint=constraints.positive)
            pyro.sample("m", dist.Normal(loc, scale).to_event(1))
            z_loc, log_scale = encoder(x).chunk(2, -1)
            with pyro.plate("data"):
                pyro.sample("z", dist.Normal(z_loc, log_scale.exp()).to_event(1))

        return model, guide
''')


def test_a_user_model_with_a_global_latent_train_evaluate_evidence(tmp_path, capsys):
    """train -> evaluate per point (refused: global latent, one line) -> evaluate --evidence."""
    import json

    from ppl_vae.commands.cli import main

    path = tmp_path / "global_vae.py"
    path.write_text(GLOBAL_FILE)
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", f"{path}:make", "--epochs", "1",
                 "--batch-size", "128", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    rc = main(["evaluate", "--run", str(out), "--estimator", "is", "-k", "5", "--limit", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "global latents" in err[0] and "--evidence" in err[0]
    assert main(["evaluate", "--run", str(out), "--estimator", "is", "-k", "50", "--limit", "20",
                 "--evidence", "--json", "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["estimator"] == "is-evidence" and row["n"] == 1 and row["limit"] == 20
    assert row["num_dims"] == 20 * 64 and row["log_likelihood"] < 0
