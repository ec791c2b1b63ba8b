"""Reading and writing: data sets (:mod:`~ppl_vae.io.data`), atomic checkpoints
(:mod:`~ppl_vae.io.checkpoint`), CSV/JSON reporting (:mod:`~ppl_vae.io.reporting`) and figures
(:mod:`~ppl_vae.io.plots`)."""
