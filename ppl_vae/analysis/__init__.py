"""What a trained pair is for.

* :mod:`~ppl_vae.analysis.generation` — samples, reconstructions, interpolation, manifolds,
  attribute vectors, decoding and encoding;
* :mod:`~ppl_vae.analysis.representation` — codes, k-NN accuracy, normality of the aggregate
  posterior;
* :mod:`~ppl_vae.analysis.imputation` — missing pixels filled in, scored against baselines;
* :mod:`~ppl_vae.analysis.posterior` — NUTS on p(z|x), approximation and amortization gaps;
* :mod:`~ppl_vae.analysis.active_units` — active latent units (Burda et al. 2016);
* :mod:`~ppl_vae.analysis.gradient_variance` — gradient statistics of any objective;
* :mod:`~ppl_vae.analysis.estimator_comparison` — objectives trained side by side;
* :mod:`~ppl_vae.analysis.reports` — the end-of-run report of ``ppl-vae train``.
"""
