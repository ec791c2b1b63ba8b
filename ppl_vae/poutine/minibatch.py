"""Minibatch rescaling of a model written for the whole data set."""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["MinibatchScale"]


class MinibatchScale(Messenger):
    r"""Scale the per-point sites of a program run on a minibatch up to the whole data set.

    A model written the way Pyro's examples write it, ``with pyro.plate("data", len(x)):`` or
    ``pyro.plate("data")`` without a size, run on a minibatch of :math:`b` of :math:`N` points
    gives :math:`\log p(x_B, z_B)` for the minibatch only. Under this handler every sample site
    inside a vectorized plate of size :math:`b` (or of unknown size) is scaled by :math:`N / b`,
    and every other site (a global latent) is left alone, so that the ELBO estimate is the
    unbiased full-data one:

    .. math::

        \mathcal{L} = \mathbb{E}_q\Big[\log p(\theta) - \log q(\theta)
            + \frac{N}{b} \sum_{n \in B} \big(\log p(x_n, z_n \mid \theta)
            - \log q(z_n \mid x_n, \theta)\big)\Big].

    This is what ``pyro.plate("data", N, subsample=...)`` does for a model that declares its
    full size; the handler makes it possible for models that do not. A plate of another role
    whose size happens to equal :math:`b` would be scaled too: pass a ``plate`` name to match
    only the data plate.

    :param int num_data: :math:`N`, the number of points in the whole data set.
    :param int batch_size: :math:`b`, the number of points in the minibatch.
    :param str plate: if given, only sites inside a plate of this name are scaled.

    Example::

        with MinibatchScale(num_data=50000, batch_size=100):
            loss = elbo.differentiable_loss(model, guide, x_batch)
    """

    def __init__(self, num_data: int, batch_size: int, plate: str | None = None):
        super().__init__()
        self.scale = float(num_data) / float(batch_size)
        self.batch_size, self.plate = int(batch_size), plate

    def _is_local(self, msg) -> bool:
        for frame in msg["cond_indep_stack"]:
            if not frame.vectorized:
                continue
            if self.plate is not None:
                if frame.name == self.plate:
                    return True
            elif frame.size in (None, -1, self.batch_size):
                return True
        return False

    def _process_message(self, msg):
        if msg["type"] == "sample" and self.scale != 1.0 and self._is_local(msg):
            msg["scale"] = msg["scale"] * self.scale
