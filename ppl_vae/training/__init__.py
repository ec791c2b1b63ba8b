"""Training a model/guide pair.

* :mod:`~ppl_vae.training.config` — :class:`TrainConfig`, every option of a run;
* :mod:`~ppl_vae.training.builders` — model/guide families built from a config;
* :mod:`~ppl_vae.training.initialization` — weight initialisations (``weight_init``);
* :mod:`~ppl_vae.training.schedules` — learning-rate schedules;
* :mod:`~ppl_vae.training.loop` — :func:`train`: epochs, validation, checkpoints, metrics;
* :mod:`~ppl_vae.training.callbacks` — :class:`Callback`, what a caller attaches to the loop;
* :mod:`~ppl_vae.training.runs` — :func:`load_run`, a finished run directory back in memory;
* :mod:`~ppl_vae.training.distributed` — torch.distributed training and sharded evaluation.
"""
