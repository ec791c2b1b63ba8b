"""Gradient estimators and effect handlers built on Pyro's inference machinery.

One estimator per module, like ``pyro/infer/*.py``:

* :mod:`~ppl_vae.infer.no_reparam` — :class:`NoReparamMessenger`: switch reparameterization off
  (score-function gradients on a continuous latent);
* :mod:`~ppl_vae.infer.tracegraph_elbo` — :class:`FastTraceGraph_ELBO`: Pyro's
  ``TraceGraph_ELBO`` without provenance tracking where it cannot change the result;
* :mod:`~ppl_vae.infer.baselines` — :class:`BaselineMessenger`, :class:`NeuralBaseline`,
  :class:`AverageBaselineTraceGraph_ELBO`: control-variate baselines;
* :mod:`~ppl_vae.infer.stl_elbo` — :class:`STL_ELBO` (Roeder et al. 2017);
* :mod:`~ppl_vae.infer.iwae_elbo` — :class:`IWAE_ELBO` (Burda et al. 2016; minibatch-correct);
* :mod:`~ppl_vae.infer.dreg_elbo` — :class:`DReG_ELBO` (Tucker et al. 2018);
* :mod:`~ppl_vae.infer.rws` — :class:`ReweightedWakeSleep` (Bornschein & Bengio 2015);
* :mod:`~ppl_vae.infer.wake_sleep` — :class:`WakeSleep` (Hinton et al. 1995);
* discrete latents (base :class:`~ppl_vae.infer.multi_sample_elbo.MultiSampleELBO`):
  :mod:`~ppl_vae.infer.reinforce_loo` — :class:`ReinforceLOO` (Kool et al. 2019);
  :mod:`~ppl_vae.infer.vimco` — :class:`VIMCO` (Mnih & Rezende 2016);
  :mod:`~ppl_vae.infer.arm` — :class:`ARM`, :class:`AntitheticBernoulliMessenger` (Yin & Zhou
  2019); :mod:`~ppl_vae.infer.disarm` — :class:`DisARM` (Dong et al. 2020);
  :mod:`~ppl_vae.infer.gumbel_softmax` — :class:`GumbelSoftmax`,
  :class:`RelaxedBernoulliMessenger` (Maddison et al. 2017; Jang et al. 2017; biased);
  :mod:`~ppl_vae.infer.rebar` — :class:`REBAR`, :class:`RebarMessenger` (Tucker et al. 2017);
  :mod:`~ppl_vae.infer.relax` — :class:`RELAX`, :class:`RelaxControlVariate` (Grathwohl et al.
  2018).

Running them: :mod:`~ppl_vae.infer.svi` — :class:`~ppl_vae.infer.svi.SVI` (one fused Adam);
:mod:`~ppl_vae.infer.compiled` — :class:`~ppl_vae.infer.compiled.CompiledStep` (an objective's
loss and gradient recorded once and run through ``torch.compile``) and
:func:`~ppl_vae.infer.compiled.capture_function`.
"""

from ppl_vae.infer.arm import ARM, AntitheticBernoulliMessenger
from ppl_vae.infer.baselines import (
    AverageBaselineTraceGraph_ELBO,
    BaselineMessenger,
    NeuralBaseline,
    score_function_guide,
)
from ppl_vae.infer.disarm import DisARM
from ppl_vae.infer.dreg_elbo import DReG_ELBO
from ppl_vae.infer.gumbel_softmax import GumbelSoftmax, RelaxedBernoulliMessenger
from ppl_vae.infer.iwae_elbo import IWAE_ELBO
from ppl_vae.infer.multi_sample_elbo import MultiSampleELBO
from ppl_vae.infer.no_reparam import NonReparameterized, NoReparamMessenger, no_reparam
from ppl_vae.infer.rebar import REBAR, RebarMessenger
from ppl_vae.infer.reinforce_loo import ReinforceLOO
from ppl_vae.infer.relax import RELAX, RelaxControlVariate
from ppl_vae.infer.rws import ReweightedWakeSleep
from ppl_vae.infer.stl_elbo import STL_ELBO
from ppl_vae.infer.tracegraph_elbo import FastTraceGraph_ELBO
from ppl_vae.infer.vimco import VIMCO
from ppl_vae.infer.wake_sleep import WakeSleep

__all__ = [
    "ARM",
    "AntitheticBernoulliMessenger",
    "DisARM",
    "FastTraceGraph_ELBO",
    "GumbelSoftmax",
    "MultiSampleELBO",
    "REBAR",
    "RebarMessenger",
    "RELAX",
    "RelaxControlVariate",
    "ReinforceLOO",
    "RelaxedBernoulliMessenger",
    "VIMCO",
    "AverageBaselineTraceGraph_ELBO",
    "BaselineMessenger",
    "DReG_ELBO",
    "IWAE_ELBO",
    "NeuralBaseline",
    "NoReparamMessenger",
    "NonReparameterized",
    "ReweightedWakeSleep",
    "STL_ELBO",
    "WakeSleep",
    "no_reparam",
    "score_function_guide",
]
