"""Which checkpoint a derived file came from.

A command that loads a run declares it (:func:`declare`, done by ``ppl_vae.commands.options.load``
and by the training report); then every PNG written by :func:`ppl_vae.io.plots.save_figure`
carries it as PNG text (key ``ppl_vae.provenance``, a JSON object), and the JSON a command prints
gains a ``provenance`` entry. :func:`read_png` reads it back.
"""

from __future__ import annotations

import contextlib
import json

__all__ = ["declare", "sources", "clear", "declared", "png_metadata", "read_png", "PNG_KEY",
           "csv_columns"]

PNG_KEY = "ppl_vae.provenance"
_SOURCES: list[dict] = []


def declare(info: dict) -> None:
    """Record that what is written next derives from the checkpoint described by ``info``
    (``run``, ``run_id``, ``checkpoint``, ``checkpoint_id``, ``epochs_done``)."""
    if info not in _SOURCES:
        _SOURCES.append(dict(info))


def clear() -> None:
    _SOURCES.clear()


def sources() -> list[dict]:
    """The sources declared so far in this process."""
    return [dict(s) for s in _SOURCES]


@contextlib.contextmanager
def declared(info: dict):
    """``declare(info)`` for the ``with`` block only."""
    saved = list(_SOURCES)
    _SOURCES[:] = [dict(info)]
    try:
        yield
    finally:
        _SOURCES[:] = saved


def csv_columns() -> dict:
    """``{"run_id": ..., "checkpoint_id": ...}`` of the one declared source, for the columns of
    a derived CSV (empty when none, or several, were declared)."""
    if len(_SOURCES) != 1:
        return {}
    return {k: _SOURCES[0].get(k) for k in ("run_id", "checkpoint_id")}


def png_metadata() -> dict:
    """PNG text chunks for the declared sources (empty when none was declared)."""
    if not _SOURCES:
        return {}
    value = _SOURCES[0] if len(_SOURCES) == 1 else _SOURCES
    return {PNG_KEY: json.dumps(value, sort_keys=True)}


def read_png(path):
    """The provenance stored in a PNG written by ppl_vae (a dict, a list of them, or None)."""
    from PIL import Image

    with Image.open(path) as im:
        text = im.info.get(PNG_KEY)
    return None if text is None else json.loads(text)
