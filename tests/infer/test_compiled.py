"""The compiled step (ppl_vae.infer.compiled): the same loss and gradients as the generic path,
for every registered objective on the shipped models, and a clean fallback where the pair or the
objective cannot be captured."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.infer.compiled import CompiledStep, NotCompilable
from ppl_vae.infer.objectives import available_objectives, make_objective
from ppl_vae.infer.svi import SVI
from ppl_vae.training.builders import build_model_and_guide
from ppl_vae.training.config import TrainConfig

D = 8
X = torch.bernoulli(torch.full((6, D), 0.4, dtype=torch.float64),
                    generator=torch.Generator().manual_seed(0))
PAIRS = {
    "vae": dict(latent_dims=(2,), hidden=(5,)),
    "vae-2-layers": dict(latent_dims=(3, 2), hidden=(5,)),
    "iaf": dict(guide="iaf", latent_dims=(2,), hidden=(5,)),
    "sbn": dict(model="sbn", latent_dims=(3,)),
}
# (pair, objective) -> the reason a capture is refused; every other valid cell must compile
REFUSED = {
    ("*", "score-avg"): "keeps state",  # decaying averages live outside the graph
    ("*", "score-nn"): "keeps state",
    ("*", "relax"): "keeps state",  # its last_variance diagnostic
    ("*", "enum"): "Python decision",  # Pyro's enumeration checks masks by value
    # the IAF's inverse (log q at a detached sample) is sequential, index by index
    **{("iaf", o): "Python decision" for o in ("score", "rws", "stl", "dreg", "ws")},
}


def _pair(pair, objective):
    torch.manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.set_default_dtype(torch.float64)
        try:
            model, guide = build_model_and_guide(TrainConfig(objective=objective,
                                                             **PAIRS[pair]), D)
        except ConfigError as exc:  # e.g. meanfield on an SBN: the builder refuses
            pytest.skip(f"not a valid pair: {exc}")
        finally:
            torch.set_default_dtype(torch.float32)
    return model.double(), guide.double()


def _grads(params):
    params = [p for p in params if not isinstance(p, torch.nn.parameter.UninitializedParameter)]
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def _zero(params):
    for p in params:
        if isinstance(p, torch.nn.parameter.UninitializedParameter):
            continue
        p.grad = None


def _cells():
    for pair in PAIRS:
        for name in available_objectives():
            yield pytest.param(pair, name, id=f"{pair}-{name}")


@pytest.mark.parametrize("pair,name", list(_cells()))
def test_compiled_step_equals_generic(pair, name):
    model, guide = _pair(pair, name)
    options = {"x_dim": D} if name == "score-nn" else {}
    objective = make_objective(name, **options)
    for module in objective.modules.values():
        module.double()
    pyro.clear_param_store()
    try:
        objective.loss_and_grads(model, guide, X, num_data=60)  # first step: generic
    except ConfigError as exc:  # an invalid cell, refused by the objective in one line
        pytest.skip(f"not a valid pair: {exc}")
    for module in objective.modules.values():  # lazy modules exist after the first step
        module.double()
    params = [*model.parameters(), *guide.parameters(),
              *(p for m in objective.modules.values() for p in m.parameters())]
    _zero(params)
    reason = REFUSED.get((pair, name), REFUSED.get(("*", name)))
    step = None
    try:
        step = CompiledStep(objective, model, guide, params, backend=None)
        step.step(X, num_data=60)  # the capture (it runs the objective once)
    except NotCompilable as exc:
        assert reason is not None, f"refused: {exc}"
        assert reason in str(exc)
        return
    assert reason is None, "captured although it should be refused"
    for seed in (1, 2):  # two steps: no state is baked into the graph
        _zero(params)
        torch.manual_seed(seed)
        expected = objective.loss_and_grads(model, guide, X, num_data=60)
        expected_grads = _grads(params)
        _zero(params)
        torch.manual_seed(seed)
        loss = step.step(X, num_data=60)
        assert loss == pytest.approx(expected, abs=1e-6, rel=1e-9)
        for got, want in zip(_grads(params), expected_grads):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_inductor_matches_generic_with_eager_random_draws(monkeypatch):
    """Through torch.compile (Inductor) the step is the same function: with Inductor's random
    numbers replaced by torch's (fallback_random), the same loss and gradients."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    model, guide = _pair("vae", "trace")
    objective = make_objective("iwae-3")
    params = [*model.parameters(), *guide.parameters()]
    objective.loss_and_grads(model, guide, X, num_data=60)
    _zero(params)
    step = CompiledStep(objective, model, guide, params)
    step.step(X, num_data=60)
    _zero(params)
    torch.manual_seed(5)
    expected = objective.loss_and_grads(model, guide, X, num_data=60)
    expected_grads = _grads(params)
    _zero(params)
    torch.manual_seed(5)
    assert step.step(X, num_data=60) == pytest.approx(expected, abs=1e-6)
    for got, want in zip(_grads(params), expected_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert step.compile_seconds > 0


@pytest.mark.parametrize("name", ["trace", "iwae-3"])
def test_float32_inductor_step_with_onednn_products_matches_generic(monkeypatch, name):
    """With ONEDNN_PRODUCTS the float32 compiled step's matrix products (forward and backward)
    run through oneDNN's linear; loss and gradients stay the generic path's to float32
    rounding."""
    import torch._inductor.config as inductor_config

    from ppl_vae.infer import compiled

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    monkeypatch.setattr(compiled, "ONEDNN_PRODUCTS", True)  # opt-in: test what it computes
    rewritten = []
    original = compiled.onednn_matmuls
    monkeypatch.setattr(compiled, "onednn_matmuls",
                        lambda g: rewritten.append(original(g)) or rewritten[-1])
    model, guide = _pair("vae", name)
    model, guide = model.float(), guide.float()
    x = X.float()
    objective = make_objective(name)
    params = [*model.parameters(), *guide.parameters()]
    objective.loss_and_grads(model, guide, x, num_data=60)
    _zero(params)
    step = CompiledStep(objective, model, guide, params)
    step.step(x, num_data=60)
    if compiled._onednn_available():
        assert rewritten and rewritten[0] >= 4  # encoder and decoder, forward and backward
    for seed in (5, 6):
        _zero(params)
        torch.manual_seed(seed)
        expected = objective.loss_and_grads(model, guide, x, num_data=60)
        expected_grads = _grads(params)
        _zero(params)
        torch.manual_seed(seed)
        assert step.step(x, num_data=60) == pytest.approx(expected, rel=1e-5, abs=1e-4)
        for got, want in zip(_grads(params), expected_grads):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_onednn_rewrite_touches_float32_cpu_products_only():
    from torch.fx.experimental.proxy_tensor import make_fx

    from ppl_vae.infer.compiled import _onednn_available, onednn_matmuls

    if not _onednn_available():
        pytest.skip("torch built without oneDNN")
    lin = torch.nn.Linear(7, 5)

    def f(a, b, c):  # an addmm and three mm's, one with a transposed operand
        return lin(a) @ b, a.t() @ (a @ c)

    for dtype, expected in ((torch.float32, 4), (torch.float64, 0)):
        lin.to(dtype)
        a, b, c = (torch.randn(*s, dtype=dtype) for s in ((3, 7), (5, 4), (7, 2)))
        with torch.no_grad():
            graph = make_fx(f)(a, b, c)
            assert onednn_matmuls(graph) == expected
            for got, want in zip(graph(a, b, c), f(a, b, c)):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _dynamic_pair():
    """A model with a Python branch on a sampled value: its structure is not static."""
    net = torch.nn.Linear(1, 1)

    def model(x):
        pyro.module("net", net)
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        loc = net(z.reshape(1, 1)).squeeze() if z > 0 else z
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("q_loc", torch.tensor(0.0))
        pyro.sample("z", dist.Normal(loc, 1.0))
    return model, guide, net


def test_dynamic_model_falls_back_with_one_notice():
    model, guide, net = _dynamic_pair()
    pyro.clear_param_store()
    svi = SVI(model, guide, "trace", lr=1e-2, modules=(net,), compile=True)
    x = torch.randn(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [svi.step(x) for _ in range(4)]
    notices = [w for w in caught if "compile" in str(w.message)]
    assert len(notices) == 1 and "Python decision" in str(notices[0].message)
    assert svi.compile is False and svi.compile_notice
    assert all(torch.isfinite(torch.tensor(losses)))


def test_a_decision_on_a_reported_value_is_refused():
    """``if loss.item() > 0`` in an objective would be baked into the graph: refused."""
    model, guide = _pair("vae", "trace")

    class Deciding(pyro.infer.Trace_ELBO):
        def loss_and_grads(self, model, guide, *args, **kwargs):
            loss = super().loss_and_grads(model, guide, *args, **kwargs)
            return loss if loss > 0 else -loss

    objective = make_objective("trace")
    objective.elbo = Deciding()
    params = [*model.parameters(), *guide.parameters()]
    with pytest.raises(NotCompilable, match="decision"):
        CompiledStep(objective, model, guide, params, backend=None).step(X)


def test_train_reports_the_compiled_step(tmp_path):
    from ppl_vae.training.loop import train

    result = train(dict(data="digits", latent_dims=(2,), hidden=(16,), epochs=1,
                        batch_size=64), tmp_path / "run", progress=False, compile=True)
    assert result.compiled and result.compile_seconds > 0 and result.compile_notice is None
    assert result.metrics.valid_elbo.notna().all()
    off = train(dict(data="digits", latent_dims=(2,), hidden=(16,), epochs=1, batch_size=64),
                tmp_path / "off", progress=False, compile=False)
    assert not off.compiled and off.compile_seconds == 0.0


@pytest.mark.parametrize("setting, vendor, expected", [
    (None, "AuthenticAMD", True), (None, "GenuineIntel", False), ("auto", "AuthenticAMD", True),
    ("", None, False), ("1", "GenuineIntel", True), ("0", "AuthenticAMD", False),
    (" 1 ", None, True)])
def test_onednn_products_default_by_setting_and_vendor(setting, vendor, expected):
    """PPL_VAE_ONEDNN forces the oneDNN products on or off; unset or auto, they are on for AMD
    CPUs only."""
    from ppl_vae.infer.compiled import onednn_products_default

    assert onednn_products_default(setting, vendor) is expected


def test_onednn_products_default_warns_on_a_bad_setting():
    from ppl_vae.infer.compiled import onednn_products_default

    with pytest.warns(UserWarning, match="PPL_VAE_ONEDNN='yes'"):
        assert onednn_products_default("yes", "AuthenticAMD") is True


def test_cpu_vendor_reads_the_first_vendor_id(tmp_path):
    from ppl_vae.infer.compiled import cpu_vendor

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n\n"
                    "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    assert cpu_vendor(str(info)) == "AuthenticAMD"
    info.write_text("processor\t: 0\n")
    assert cpu_vendor(str(info)) is None
    assert cpu_vendor(str(tmp_path / "missing")) is None
