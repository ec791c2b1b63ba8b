"""The docstring standard of the objectives and estimators (Pyro's style), and their examples.

Every ELBO class the objective registry builds from :mod:`ppl_vae.infer`, and every
marginal-likelihood estimator, has an ``r\"\"\"`` docstring with the math (``.. math::``), a
``:param:`` list that matches its signature, numbered references cited in the text, and an
``Example::`` block, which is run here. (The API reference itself is built by ``.ci/run`` with
Sphinx, not by pytest.)
"""

import inspect
import re
import textwrap

import pyro
import pytest

from ppl_vae import marginal
from ppl_vae.infer import NeuralBaseline, NoReparamMessenger, RelaxControlVariate
from ppl_vae.infer.mcem import MonteCarloEM
from ppl_vae.infer.objectives import available_objectives, objective_spec


def registered_elbo_classes():
    classes = {objective_spec(name).elbo_class for name in available_objectives()}
    return sorted((c for c in classes if c.__module__.startswith("ppl_vae.infer.")),
                  key=lambda c: c.__name__)


ESTIMATORS = [marginal.naive_monte_carlo, marginal.importance_sampling,
              marginal.annealed_importance_sampling, marginal.estimate_log_likelihood]
OTHERS = [NeuralBaseline, NoReparamMessenger, RelaxControlVariate, MonteCarloEM]
DOCUMENTED = registered_elbo_classes() + OTHERS + ESTIMATORS


def _id(obj):
    return obj.__name__


def _params_documented(doc):
    return re.findall(r"^\s*:param (?:[\w.]+ )?(\w+):", doc, re.M)


def _example(doc):
    m = re.search(r"\n( *)Example::\n\n(.*?)(?=\n\1\S|\Z)", doc, re.S)
    return textwrap.dedent(m.group(2)) if m else None


def test_the_registry_builds_our_elbo_classes():
    names = {c.__name__ for c in registered_elbo_classes()}
    assert {"IWAE_ELBO", "DReG_ELBO", "STL_ELBO", "ReweightedWakeSleep", "WakeSleep",
            "AverageBaselineTraceGraph_ELBO"} <= names


@pytest.mark.parametrize("obj", DOCUMENTED, ids=_id)
def test_pyro_style_docstring(obj):
    doc = obj.__doc__ or ""
    for part in (".. math::", ":param", "Example::", "**References**", "[1]"):
        assert part in doc, f"{obj.__name__}: no {part!r} in its docstring"
    text, refs = doc.split("**References**", 1)
    prose = re.sub(r"``.*?``|:math:`.*?`", "", text, flags=re.S)  # x[0], [0, 1] are no citations
    cited = {n for group in re.findall(r"\[(\d+(?:, \d+)*)\]", prose) for n in group.split(", ")}
    listed = set(re.findall(r"^\s*\[(\d+)\] ", refs, re.M))
    assert "1" in listed and cited == listed, (obj.__name__, cited, listed)
    assert sorted(map(int, listed)) == list(range(1, len(listed) + 1))
    if inspect.isfunction(obj):
        assert ":returns:" in doc and ":rtype:" in doc


@pytest.mark.parametrize("obj", DOCUMENTED, ids=_id)
def test_param_lists_match_signatures(obj):
    doc = obj.__doc__ or ""
    sig = inspect.signature(obj)
    params = {n: p for n, p in sig.parameters.items()}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    documented = _params_documented(doc)
    assert len(documented) == len(set(documented)), f"{obj.__name__}: a :param: twice"
    named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = set(documented) - set(params) - {"kwargs"}
    if not var_kw:
        assert not unknown, f"{obj.__name__}: documents no such parameters {unknown}"
    if "__init__" in vars(obj) or inspect.isfunction(obj):
        # its own signature: every named parameter is documented
        assert named <= set(documented), f"{obj.__name__}: undocumented {named - set(documented)}"


def _run_example(obj):
    code = _example(obj.__doc__)
    assert code, f"{obj.__name__}: empty Example::"
    pyro.clear_param_store()
    exec(compile(code, f"<{obj.__name__} example>", "exec"), {})


@pytest.mark.parametrize("obj", DOCUMENTED, ids=_id)
def test_examples_run(obj):
    _run_example(obj)
