r"""Trace once, then run an objective's loss and gradient as one compiled tensor program.

:class:`CompiledStep` takes any objective (:class:`~ppl_vae.infer.objectives.Objective`) on any
Pyro model/guide pair whose trace structure is *static* — the same sample sites, shapes and
plates on every call, no Python branch on a sampled or observed value — and records what one
call of ``objective.loss_and_grads(model, guide, *args)`` does to tensors, at the level of ATen
operations, with :func:`torch.fx.experimental.proxy_tensor.make_fx` (the tracer
``torch.compile``'s AOTAutograd uses). Pyro's effect handlers, the ELBO's bookkeeping and the
modules' Python run once, at capture time; what is left is a graph from the parameters and the
data to the reported loss and the gradients, including the backward pass and the random draws,
which :func:`torch.compile` (Inductor) fuses into a few kernels.

What a capture needs from the objective, and how it gets it:

* **Gradients.** ``loss_and_grads`` calls ``backward()`` on its surrogate loss; during capture
  that call becomes ``torch.autograd.grad`` with respect to the parameters, so the backward ops
  are recorded and the gradients are outputs of the graph (summed over several ``backward``
  calls, as ``.grad`` accumulation would).
* **The reported loss.** Pyro's ELBOs report a Python float built from ``Tensor.item()`` values;
  during capture ``item()`` returns a :class:`float` that also carries its tensor through the
  ELBO's arithmetic (``+ - * /``, negation), so the float the objective returns names a tensor of
  the graph. An objective whose reported loss leaves that arithmetic is not captured.
* **Validation.** Pyro's and torch's argument and support checks are off in the captured
  step (they are decisions on values); the generic first step has run them.
* **Static structure.** A Python decision on a tensor's value (``if x.sum() > 0``) cannot be
  recorded: the tracer refuses it, and the step stays generic (one notice).
* **No hidden state.** An objective whose ELBO keeps Python-side state between steps (a
  decaying-average baseline) declares ``compilable = False`` on its class and is not captured.

Matrix products: with :data:`ONEDNN_PRODUCTS` set, the float32 CPU products of a graph
(``aten.mm``, ``aten.addmm``, forward and backward) are rewritten as oneDNN's linear before
Inductor compiles it (:func:`onednn_matmuls`). torch runs float32 ``mm`` on MKL, whose kernels
on AMD CPUs reach about half of oneDNN's on a VAE's shapes (on an Intel CPU the two were within
noise), so it is on by default for AMD CPUs only (:func:`onednn_products_default`);
``PPL_VAE_ONEDNN=1`` or ``0`` forces it. A long IS run's resident memory grows with oneDNN's
scratch buffers (glibc heap fragmentation), which ``ppl-vae evaluate`` trims
(:class:`ppl_vae.io.memory.FreedMemoryTrimmer`).

Random numbers: the graph draws them from torch's generator in eager mode; Inductor's kernels
use their own generator, so a compiled run is as random as the generic one but not the same
draws for the same seed (``torch._inductor.config.fallback_random = True`` makes them equal, as
the tests do). One graph is kept per argument shape (the last, smaller minibatch of an epoch is
a second graph).

**References**

[1] Ansel et al. (2024), "PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode
    Transformation and Graph Compilation", ASPLOS.
"""

from __future__ import annotations

import contextlib
import os
import time

import pyro
import torch
from torch.utils._python_dispatch import _disable_current_modes

from ppl_vae.poutine.capture import recording

__all__ = ["CompiledStep", "NotCompilable", "capture_function", "cpu_vendor", "is_compilable",
           "onednn_matmuls", "onednn_products_default", "wants_compile"]


class NotCompilable(Exception):
    """The objective or the pair cannot be captured; the message says why (one line)."""


def wants_compile(compile, work: int, minimum: int) -> bool:
    """``compile``: True, False, or ``"auto"`` / None (when ``work`` — training steps, log-weight
    rows — is at least ``minimum``, so that the compile time is repaid)."""
    if compile in ("auto", None):
        return work >= minimum
    if isinstance(compile, str):
        from ppl_vae.errors import ConfigError

        raise ConfigError(f"compile must be True, False or 'auto', got {compile!r}")
    return bool(compile)


def is_compilable(objective) -> bool:
    """Whether the objective's ELBO class allows capture (class attribute ``compilable``,
    True where none is declared)."""
    return bool(getattr(type(objective.elbo), "compilable", True))


class _Tracked(float):
    """A float that also carries the tensor it was read from through ``+ - * /``; comparing it
    (a decision the graph could not replay) refuses the capture."""

    def __new__(cls, value, tensor):
        self = super().__new__(cls, value)
        self.tensor = tensor
        return self

    @staticmethod
    def _t(other):
        return other.tensor if isinstance(other, _Tracked) else other

    def _op(self, other, fn):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return _Tracked(fn(float(self), float(other)), fn(self.tensor, self._t(other)))

    def _rop(self, other, fn):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return _Tracked(fn(float(other), float(self)), fn(self._t(other), self.tensor))

    def __add__(self, o):
        return self._op(o, lambda a, b: a + b)

    def __radd__(self, o):
        return self._rop(o, lambda a, b: a + b)

    def __sub__(self, o):
        return self._op(o, lambda a, b: a - b)

    def __rsub__(self, o):
        return self._rop(o, lambda a, b: a - b)

    def __mul__(self, o):
        return self._op(o, lambda a, b: a * b)

    def __rmul__(self, o):
        return self._rop(o, lambda a, b: a * b)

    def __truediv__(self, o):
        return self._op(o, lambda a, b: a / b)

    def __rtruediv__(self, o):
        return self._rop(o, lambda a, b: a / b)

    def _decision(self, *_):
        raise NotCompilable("a Python decision on a value read with item()")

    __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _decision
    __hash__ = float.__hash__

    def __eq__(self, other):  # x != x is a NaN check, not a decision on the value
        if other is self:
            return float(self) == float(self)
        self._decision()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __neg__(self):
        return _Tracked(-float(self), -self.tensor)

    def __pos__(self):
        return self


class _Recorder:
    """What one captured call did: gradients of every ``backward`` with respect to ``params``."""

    def __init__(self, params):
        self.params = list(params)
        self.grads = [None] * len(self.params)

    def backward(self, tensor, gradient=None, retain_graph=None, create_graph=False,
                 inputs=None):
        if inputs is not None:
            raise NotCompilable("backward(inputs=...) is not captured")
        live = [i for i, p in enumerate(self.params) if p.requires_grad]
        grads = torch.autograd.grad(tensor, [self.params[i] for i in live], gradient,
                                    retain_graph=True, allow_unused=True)
        for i, g in zip(live, grads):
            if g is not None:
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def item(self, tensor):
        with _disable_current_modes():
            value = _ITEM(tensor)
        return _Tracked(float(value), tensor) if tensor.is_floating_point() else value


_ITEM = torch.Tensor.item


@contextlib.contextmanager
def _capturing(recorder: _Recorder):
    """Route ``backward`` and ``item`` through ``recorder`` (only while capturing)."""
    saved = torch.Tensor.backward, torch.autograd.backward, torch.Tensor.item

    def item(self):
        return recorder.item(self)

    flag = recording()
    flag.__enter__()
    torch.Tensor.backward = lambda self, *a, **k: recorder.backward(self, *a, **k)
    torch.autograd.backward = (
        lambda tensors, grad_tensors=None, **k: recorder.backward(tensors, grad_tensors, **k))
    torch.Tensor.item = item
    try:
        yield
    finally:
        flag.__exit__(None, None, None)
        torch.Tensor.backward, torch.autograd.backward, torch.Tensor.item = saved


def _refusal(exc: Exception) -> str:
    """One line: where the tracer was refused (the innermost frame outside torch)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and not f.filename.endswith("compiled.py")]
    where = f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "_local_scalar_dense" in text:
        text = "a Python decision on a tensor value"
    return f"{text}{where}"


def _state(modules) -> dict:
    """What a pure step leaves alone: the parameter store's tensors (by identity) and the
    modules' buffers (by version counter)."""
    store = pyro.get_param_store()
    state = {("param", k): id(v) for k, v in store.get_state()["params"].items()}
    for i, module in enumerate(modules):
        if isinstance(module, torch.nn.Module):
            state.update({("buffer", i, k): b._version for k, b in module.named_buffers()})
    return state


def _key(args, kwargs):
    def one(v):
        if isinstance(v, torch.Tensor):
            return ("T", tuple(v.shape), v.dtype, v.device.type)
        return ("V", repr(v))
    return (tuple(one(a) for a in args), tuple((k, one(v)) for k, v in sorted(kwargs.items())))


class CompiledStep:
    """``CompiledStep(objective, model, guide, params)``; ``step(*args, **kwargs) -> loss``
    accumulates the gradient into each parameter's ``.grad`` like ``loss_and_grads`` does.

    ``params``: every tensor the objective may differentiate (what :class:`~ppl_vae.infer.svi.SVI`
    optimizes); ``modules``: further ``nn.Module`` s the pair uses (their train/eval mode selects
    the graph, and their buffers must not change during a step). ``backend``: ``"inductor"``
    (``torch.compile``), or ``None`` to run the captured
    graph as recorded (eager ATen calls, the generic path's exact arithmetic and random draws).
    Raises :class:`NotCompilable` from :meth:`step` when the objective or the pair cannot be
    captured. ``compile_seconds`` sums the capture and compilation time of every graph.
    """

    def __init__(self, objective, model, guide, params, backend: str | None = "inductor",
                 modules=()):
        if not is_compilable(objective):
            raise NotCompilable(f"objective {objective.name!r} keeps state between steps")
        self.objective, self.model, self.guide = objective, model, guide
        # a lazy module never called (RELAX's network on a pair without Bernoulli sites)
        self.params = [p for p in params
                       if not isinstance(p, torch.nn.parameter.UninitializedParameter)]
        self.modules = [m for m in (model, guide, *modules, *objective.modules.values())
                        if isinstance(m, torch.nn.Module)]
        self.backend = backend
        self.compile_seconds = 0.0
        self._graphs: dict = {}
        self._seen: dict = {}

    def _capture(self, args, kwargs):
        params, n_args = self.params, len(args)
        names = sorted(kwargs)
        tensor_kw = [k for k in names if isinstance(kwargs[k], torch.Tensor)]
        static_kw = {k: kwargs[k] for k in names if k not in tensor_kw}
        n_params = len(params)

        def joint(*flat):
            call_args = flat[n_params:n_params + n_args]
            call_kw = dict(zip(tensor_kw, flat[n_params + n_args:]), **static_kw)
            recorder = _Recorder(params)
            # the generic first step has validated the pair; the checks are value decisions
            with _capturing(recorder), pyro.validation_enabled(False):
                loss = self.objective.loss_and_grads(self.model, self.guide, *call_args,
                                                     **call_kw)
            if not isinstance(loss, _Tracked):
                raise NotCompilable("the reported loss is not a function of the traced tensors")
            grads = [torch.zeros_like(p) if g is None else g
                     for p, g in zip(params, recorder.grads)]
            return (loss.tensor.detach(), *[g.detach() for g in grads])

        from torch.fx.experimental.proxy_tensor import make_fx

        flat = [*params, *args, *(kwargs[k] for k in tensor_kw)]
        owners = self.modules
        before = _state(owners)
        try:
            graph = make_fx(joint)(*flat)
        except NotCompilable:
            raise
        except Exception as exc:  # the tracer refuses data-dependent Python
            raise NotCompilable(_refusal(exc)) from None
        changed = sorted(str(k[-1]) for k, v in _state(owners).items() if before.get(k) != v)
        if changed:
            raise NotCompilable(f"a step writes state outside its loss and gradient "
                                f"({', '.join(changed[:3])})")
        if self.backend is not None:
            if ONEDNN_PRODUCTS:
                onednn_matmuls(graph)
            graph = torch.compile(graph, backend=self.backend, dynamic=False)
        return graph, tensor_kw

    #: a shape after the first is captured once it has been seen this often (the last, smaller
    #: minibatch of an epoch runs generic until then: its compilation would cost more than it
    #: saves in a short run)
    capture_after = 10

    def step(self, *args, **kwargs) -> float:
        key = (_key(args, kwargs), tuple(m.training for m in self.modules))
        entry = self._graphs.get(key)
        start = None
        if entry is None and self._graphs:
            self._seen[key] = seen = self._seen.get(key, 0) + 1
            if seen < self.capture_after:
                return self.objective.loss_and_grads(self.model, self.guide, *args, **kwargs)
        if entry is None:
            start = time.perf_counter()
            entry = self._graphs[key] = self._capture(args, kwargs)
        graph, tensor_kw = entry
        with torch.no_grad():  # the graph holds its own backward pass
            loss, *grads = graph(*self.params, *args, *(kwargs[k] for k in tensor_kw))
        if start is not None:
            self.compile_seconds += time.perf_counter() - start
        for p, g in zip(self.params, grads):
            if p.grad is None:
                p.grad = g
            else:
                p.grad += g
        return loss.item()



def capture_function(fn, *example, backend: str | None = None, random: bool = False):
    """``fn`` (tensors in, a tuple of tensors out, no state) recorded once as a graph of ATen
    operations and returned as a callable over tensors of the example's shapes.

    Tensors ``fn`` closes over (the model's parameters, the data) are constants of the graph:
    use the result while they stay fixed (an evaluation). ``backend=None`` replays the recorded
    operations (the same arithmetic as ``fn``, without its Python); ``"inductor"`` compiles them.

    ``random=False``: ``fn`` draws no random numbers, and what depends on the constants alone
    (the encoder's q(z|x) of fixed data) is computed once, on the first call.
    ``random=True``: ``fn`` draws from torch's generator (importance sampling's proposals).
    Nothing is folded (a draw has no tensor inputs, so folding would freeze it), recording
    leaves the generator's state as it was, and Inductor is told to draw through ATen
    (``fallback_random``): every call draws the same numbers from the same generator state as
    ``fn`` would, so seeded streams stay what they are.

    Raises :class:`NotCompilable` where ``fn`` decides in Python on a tensor's value.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    devices = sorted({t.device for t in example if t.device.type == "cuda"}, key=str)
    kept = torch.random.fork_rng(devices=devices) if random else contextlib.nullcontext()
    try:
        with kept, recording(), pyro.validation_enabled(False):
            graph = make_fx(fn)(*example)
    except Exception as exc:
        raise NotCompilable(_refusal(exc)) from None
    if not random:
        from torch.fx.experimental.const_fold import split_const_subgraphs

        # what depends on the constants alone (the encoder's q(z|x) of fixed data) runs once
        graph = split_const_subgraphs(graph)
    if backend is None:
        return graph
    if ONEDNN_PRODUCTS:
        onednn_matmuls(graph)
    options = {"fallback_random": True} if random and backend == "inductor" else None
    return torch.compile(graph, backend=backend, dynamic=False, options=options)


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The ``vendor_id`` of the first CPU in ``cpuinfo`` (``"AuthenticAMD"``,
    ``"GenuineIntel"``, ...), or None where the file is missing or names none."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip() or None
    except OSError:
        return None
    return None


def onednn_products_default(setting: str | None, vendor: str | None) -> bool:
    """Whether compiled graphs get oneDNN's products: ``setting`` (``PPL_VAE_ONEDNN``) ``"1"``
    or ``"0"`` decides; unset, empty or ``"auto"``, on for AMD CPUs only, where MKL's float32
    kernels reach about half of oneDNN's on a VAE's shapes (on Intel CPUs the two were within
    noise of each other, see ``docs/speed.md``). Any other value warns, naming the variable, and
    counts as ``"auto"``."""
    setting = (setting or "auto").strip().lower()
    if setting in ("1", "0"):
        return setting == "1"
    if setting != "auto":
        import warnings

        warnings.warn(f"PPL_VAE_ONEDNN={setting!r} is not 0, 1 or auto; using auto",
                      stacklevel=2)
    return vendor == "AuthenticAMD"


#: rewrite the float32 CPU matrix products of compiled graphs as oneDNN's linear (see the
#: module docstring): ``PPL_VAE_ONEDNN=1``/``0`` forces it; by default on for AMD CPUs only
ONEDNN_PRODUCTS = onednn_products_default(os.environ.get("PPL_VAE_ONEDNN"), cpu_vendor())

_LINEAR = []


def _onednn_linear_op():
    """``ppl_vae::onednn_linear(x, weight, bias=None) = x @ weight.T + bias`` through oneDNN, as
    an opaque operator (Inductor's own lowering of oneDNN's linear wants a constant, pre-packed
    weight); defined on first use."""
    if not _LINEAR:
        @torch.library.custom_op("ppl_vae::onednn_linear", mutates_args=())
        def onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

        @onednn_linear.register_fake
        def _(x, weight, bias):
            return x.new_empty((x.shape[0], weight.shape[0]))

        _LINEAR.append(torch.ops.ppl_vae.onednn_linear.default)
    return _LINEAR[0]


def _onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn,
                                                                    "_linear_pointwise")


def onednn_matmuls(graph: torch.fx.GraphModule) -> int:
    """Rewrite the float32 CPU matrix products of a recorded graph (``aten.mm``, ``aten.addmm``
    with a vector bias) as oneDNN's ``linear`` (``torch.ops.mkldnn._linear_pointwise``), in
    place; returns how many were rewritten. The same products in float32, another summation
    order: torch sends float32 ``mm`` to MKL, whose kernels on this project's AMD CPUs reach
    about half of what oneDNN's do on the shapes of a VAE (100 x 784 x 500: 180 against 380
    GFLOP/s). Nothing is rewritten where oneDNN is not built in, or for other dtypes/devices."""
    if not _onednn_available():
        return 0
    aten, linear = torch.ops.aten, _onednn_linear_op()

    def ok(node, dims=2):
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        return (isinstance(val, torch.Tensor) and val.dtype == torch.float32
                and val.device.type == "cpu" and val.dim() == dims)

    count = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.kwargs:
            continue
        if node.target == aten.mm.default and all(ok(a) for a in node.args):
            a, b, bias = node.args[0], node.args[1], None
        elif (node.target == aten.addmm.default and len(node.args) == 3
              and ok(node.args[0], 1) and ok(node.args[1]) and ok(node.args[2])):
            bias, a, b = node.args
        else:
            continue
        with graph.graph.inserting_before(node):
            weight = graph.graph.call_function(aten.t.default, (b,))
            out = graph.graph.call_function(linear, (a, weight, bias))
        out.meta = dict(node.meta)
        node.replace_all_uses_with(out)
        graph.graph.erase_node(node)
        count += 1
    if count:
        graph.graph.lint()
        graph.recompile()
    return count
