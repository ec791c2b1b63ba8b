"""The VAE in NumPyro: ``numpyro.infer.SVI`` + ``Trace_ELBO``, one jit-compiled epoch.

Set up as NumPyro's VAE example (``examples/vae.py``) does: the networks are (init, apply)
pairs registered with ``numpyro.module`` (written here in plain JAX, initialized as
``torch.nn.Linear`` is: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), the model
and guide sample inside ``numpyro.plate``, ``numpyro.optim.Adam(1e-3)``, and a whole epoch of
``svi.update`` steps runs in one ``jax.jit``-compiled ``lax.fori_loop`` over a permutation of
the training set; the validation ELBO is a second jit-compiled loop of ``svi.evaluate``. The
first epoch includes the compilation. Runs in the benchmark's own venv (``peers.py`` makes it):

    VENV/bin/python benchmarks/peers/run_numpyro.py --data bmnist.npz --epochs 3
"""

from __future__ import annotations

import sys
import time

import _runner
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import lax
from numpyro.infer import SVI, Trace_ELBO


def mlp(sizes):
    """``(init_fn, apply_fn)`` of Linear layers of ``sizes`` with ReLU between them."""
    def init_fn(rng, input_shape):
        params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            rng, kw, kb = jax.random.split(rng, 3)
            bound = a ** -0.5
            params.append((jax.random.uniform(kw, (a, b), minval=-bound, maxval=bound),
                           jax.random.uniform(kb, (b,), minval=-bound, maxval=bound)))
        return input_shape[:-1] + (sizes[-1],), params

    def apply_fn(params, x):
        for i, (w, b) in enumerate(params):
            x = x @ w + b
            x = jax.nn.relu(x) if i < len(params) - 1 else x
        return x

    return init_fn, apply_fn


H = _runner.HIDDEN
ENCODER = mlp((_runner.X_DIM, *H, 2 * _runner.Z_DIM))
DECODER = mlp((_runner.Z_DIM, *reversed(H), _runner.X_DIM))


def model(x):
    decode = numpyro.module("decoder", DECODER, (x.shape[0], _runner.Z_DIM))
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Normal(jnp.zeros(_runner.Z_DIM), 1.0).to_event(1))
        numpyro.sample("obs", dist.Bernoulli(logits=decode(z)).to_event(1), obs=x)


def guide(x):
    encode = numpyro.module("encoder", ENCODER, x.shape)
    with numpyro.plate("data", x.shape[0]):
        loc, raw = jnp.split(encode(x), 2, axis=-1)
        numpyro.sample("z", dist.Normal(loc, jax.nn.softplus(raw) + 1e-5).to_event(1))


def compiled_loops(svi):
    """``train_epoch(state, x, perm) -> state`` and ``valid_loss(state, x) -> summed loss``."""
    b, chunk = _runner.BATCH, _runner.EVAL_CHUNK

    @jax.jit
    def train_epoch(state, x, perm):
        def body(i, state):
            idx = lax.dynamic_slice_in_dim(perm, i * b, b)
            return svi.update(state, x[idx])[0]
        return lax.fori_loop(0, x.shape[0] // b, body, state)

    @jax.jit
    def valid_loss(state, x):
        def body(i, total):
            return total + svi.evaluate(state, lax.dynamic_slice_in_dim(x, i * chunk, chunk))
        return lax.fori_loop(0, x.shape[0] // chunk, body, 0.0)

    return train_epoch, valid_loss


def main(argv=None) -> int:
    args = _runner.parser(__doc__).parse_args(argv)
    _runner.meta("numpyro", "numpyro", "jax", "jaxlib", devices=str(jax.devices()))
    train, valid = (jnp.asarray(a) for a in _runner.load(args.data))
    if valid.shape[0] % _runner.EVAL_CHUNK:
        raise SystemExit(f"the valid split must be a multiple of {_runner.EVAL_CHUNK} points")
    svi = SVI(model, guide, numpyro.optim.Adam(_runner.LR), Trace_ELBO())
    rng, init_key = jax.random.split(jax.random.PRNGKey(args.seed))
    state = svi.init(init_key, train[:_runner.BATCH])
    train_epoch, valid_loss = compiled_loops(svi)
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        rng, key = jax.random.split(rng)
        state = train_epoch(state, train, jax.random.permutation(key, train.shape[0]))
        loss = float(valid_loss(state, valid))  # float(): waits for the computation
        _runner.report(epoch, time.perf_counter() - t0, -loss / valid.shape[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
