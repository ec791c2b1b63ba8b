"""Effect handlers and trace queries shared by every layer above.

* :mod:`~ppl_vae.poutine.plates` — :func:`data_plate`, the plate the data points run along;
* :mod:`~ppl_vae.poutine.handlers` — :class:`PointLatents`, :class:`ScaleLatents`,
  :class:`Temperature`: Messengers that change latent sites.
"""
