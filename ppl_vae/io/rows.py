r"""Data points that are not one in-memory tensor: dictionaries of tensors, torch datasets.

The training loop draws a minibatch as ``x_train[indices]`` and asks for ``x_train.shape[0]``.
:class:`Rows` gives both to

* a dictionary of tensors sharing their first dimension (``{"x": ..., "mask": ...}``, as
  Pyro's deep Markov model takes sequences and their masks): a minibatch is the dictionary of
  the indexed tensors;
* a map-style :class:`torch.utils.data.Dataset` (``__getitem__(i)`` and ``__len__``), e.g.
  one that reads its items from disk: a minibatch is the items at the indices, collated by
  :func:`torch.utils.data.default_collate`, so only a minibatch is ever in memory.

:func:`num_points` is the number of data points of a minibatch of any of these forms.
"""

from __future__ import annotations

import torch

from ppl_vae.errors import DataError

__all__ = ["Rows", "num_points", "as_rows"]


def num_points(x) -> int:
    """Data points in ``x``: a tensor's first dimension, or that of a dictionary's tensors."""
    if isinstance(x, dict):
        return int(next(iter(x.values())).shape[0])
    return int(x.shape[0])


class Rows:
    """Data points indexable by position: see the module docstring.

    :param source: a dictionary of tensors with a common first dimension, or a map-style
        dataset.
    """

    def __init__(self, source):
        if isinstance(source, dict):
            if not source or not all(isinstance(v, torch.Tensor) for v in source.values()):
                raise DataError("a dictionary of data needs at least one tensor, all tensors")
            sizes = {k: int(v.shape[0]) for k, v in source.items()}
            if len(set(sizes.values())) != 1:
                raise DataError(f"the tensors of a data dictionary differ in length: {sizes}")
        elif not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
            raise DataError(f"cannot index data of type {type(source).__name__}: pass a tensor, "
                            "an array, a .npy path, a dict of tensors or a map-style Dataset")
        self.source = source

    def __len__(self) -> int:
        if isinstance(self.source, dict):
            return num_points(self.source)
        return len(self.source)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([len(self)])

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        if isinstance(self.source, dict):
            return {k: v[index] for k, v in self.source.items()}
        from torch.utils.data import default_collate

        index = torch.as_tensor(index).reshape(-1).tolist()
        return default_collate([self.source[i] for i in index])

    def subset(self, start: int, stop: int) -> Rows:
        """Points ``start .. stop - 1`` (a view for a dictionary)."""
        if isinstance(self.source, dict):
            return Rows({k: v[start:stop] for k, v in self.source.items()})
        from torch.utils.data import Subset

        return Rows(Subset(self.source, range(start, stop)))

    def to(self, device) -> Rows:
        if isinstance(self.source, dict):
            return Rows({k: v.to(device) for k, v in self.source.items()})
        return self  # a dataset's items are moved when they are drawn

    def numel_per_point(self) -> int:
        first = self[torch.tensor([0])]
        values = first.values() if isinstance(first, dict) else [first]
        return int(sum(v[0].numel() for v in values if isinstance(v, torch.Tensor)))


def as_rows(data):
    """``data`` as something the training loop can index: tensors as they are, dictionaries and
    datasets as :class:`Rows`."""
    if isinstance(data, (torch.Tensor, Rows)):
        return data
    return Rows(data)
