"""Your own model/guide pair, named on the command line as ``module:factory`` or
``path/to/file.py:factory``.

The factory returns ``(model, guide)``: Pyro callables that take the data ``x`` (an
``(N, ...)`` tensor) as their first argument, written as you would for Pyro's own ``SVI``
(a data plate with or without a size, ``pyro.module``/``pyro.param``/``PyroModule``
parameters). It may accept any of the keywords ``x_dim`` (features per point) and ``config``
(the :class:`~ppl_vae.training.config.TrainConfig`); it is called with those it declares.

Each callable is wrapped in a :class:`PyroProgram` module, so that the training loop, the
checkpoints and every command treat it like the built-in families: minibatches are rescaled
to the whole data set by :class:`~ppl_vae.poutine.minibatch.MinibatchScale`, and the
``pyro.param`` values the program creates are saved with the checkpoint. The spec is recorded
in the run's config (a file path made absolute), so ``ppl-vae evaluate --run DIR`` and
:func:`~ppl_vae.training.runs.load_run` rebuild the same pair.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

import pyro
import torch
from torch import nn

from ppl_vae.errors import ConfigError
from ppl_vae.io.rows import num_points
from ppl_vae.poutine.minibatch import MinibatchScale

__all__ = ["is_user_model", "normalize_spec", "load_factory", "build_user_pair", "PyroProgram"]


def is_user_model(spec: str) -> bool:
    """Whether ``--model`` names a factory (``module:factory`` or ``file.py:factory``)."""
    return ":" in str(spec)


def normalize_spec(spec: str) -> str:
    """``spec`` with a file path made absolute (so a run reloads from any directory)."""
    target, _, name = str(spec).rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{name}"
    return spec


def load_factory(spec: str):
    """The factory named by ``spec``; :class:`ConfigError` naming ``--model`` otherwise."""
    target, _, name = str(spec).rpartition(":")
    if not target or not name.isidentifier():
        raise ConfigError(f"--model {spec!r}: expected module:factory or path/to/file.py:factory")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"--model {spec!r}: no such file {path}")
        module_name = f"ppl_vae_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module
            loader.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"--model {spec!r}: cannot import {target!r} ({exc})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {target} has no callable {name!r}")
    return factory


class PyroProgram(nn.Module):
    r"""A Pyro callable (model or guide) as an ``nn.Module`` the training loop can drive.

    ``forward(x, num_data=None)`` runs the program on ``x``; with ``num_data`` it runs under
    :class:`~ppl_vae.poutine.minibatch.MinibatchScale` (``N = num_data``, ``b = len(x)``). The
    program's own ``nn.Module`` (if it is one) is a submodule, so its weights are in
    ``state_dict``; values of ``pyro.param`` statements it ran are saved as extra state.

    :param program: the callable.
    """

    def __init__(self, program):
        super().__init__()
        self.program = program
        self.param_names: set[str] = set()
        self._pending: dict[str, torch.Tensor] = {}
        for attr in ("likelihood", "obs_site"):
            if hasattr(program, attr):
                setattr(self, attr, getattr(program, attr))

    def _run(self, x, args, kwargs, num_data):
        if "batch_size" in kwargs and not self._accepts("batch_size"):
            raise ConfigError("this model takes no batch_size: it cannot generate without data")
        if num_data is not None and x is not None and int(num_data) != num_points(x):
            with MinibatchScale(num_data, num_points(x)):
                return self.program(x, *args, **kwargs)
        return self.program(x, *args, **kwargs)

    def forward(self, x, *args, num_data=None, **kwargs):
        if self._pending:  # create the params (with their constraints), then restore them
            with torch.no_grad(), pyro.poutine.block(), torch.random.fork_rng(devices=[]):
                self._run(x, args, kwargs, None)
            self._restore()
        with pyro.poutine.trace(param_only=True) as tr:
            out = self._run(x, args, kwargs, num_data)
        self.param_names.update(tr.trace.nodes)
        return out

    def _accepts(self, keyword: str) -> bool:
        try:
            params = inspect.signature(self.program).parameters
        except (TypeError, ValueError):
            return True
        return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def _restore(self):
        store = pyro.get_param_store()
        for name in [n for n in self._pending if n in store]:
            with torch.no_grad():
                store.get_param(name).unconstrained().copy_(self._pending.pop(name))

    def get_extra_state(self):
        store = pyro.get_param_store()
        saved = {name: store.get_param(name).unconstrained().detach().clone()
                 for name in sorted(self.param_names) if name in store}
        return {**self._pending, **saved}

    def set_extra_state(self, state):
        self._pending = {name: value.detach().clone() for name, value in (state or {}).items()}
        self.param_names.update(self._pending)
        self._restore()


def build_user_pair(spec: str, config, x_dim: int):
    """``(model, guide)`` from the factory ``spec``, each wrapped in a :class:`PyroProgram`."""
    factory = load_factory(spec)
    accepted = inspect.signature(factory).parameters
    offered = {"x_dim": int(x_dim), "config": config}
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    pair = factory(**kwargs)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(callable, pair))):
        raise ConfigError(f"--model {spec!r}: the factory must return (model, guide)")
    model, guide = (PyroProgram(p) for p in pair)
    return model, guide
