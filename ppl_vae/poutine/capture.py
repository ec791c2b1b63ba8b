"""Whether a graph capture is recording right now (:mod:`ppl_vae.infer.compiled`).

Model code with a value-dependent fast path (a likelihood that checks whether its data are
binary) asks :func:`is_capturing` and takes the branch-free way while a capture records, since a
recorded graph cannot replay a Python decision on a tensor's value.
"""

from __future__ import annotations

import contextlib

__all__ = ["is_capturing", "recording"]

_ACTIVE = [False]


def is_capturing() -> bool:
    """Whether :class:`~ppl_vae.infer.compiled.CompiledStep` or
    :func:`~ppl_vae.infer.compiled.capture_function` is recording."""
    return _ACTIVE[0]


@contextlib.contextmanager
def recording():
    """Mark the enclosed code as recorded (see :func:`is_capturing`)."""
    saved, _ACTIVE[0] = _ACTIVE[0], True
    try:
        yield
    finally:
        _ACTIVE[0] = saved
