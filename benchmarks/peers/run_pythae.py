"""The VAE in pythae: ``pythae.models.VAE`` with custom networks, trained by ``TrainingPipeline``.

pythae's ``VAE`` fixes two choices of its own: the encoder returns the log-variance (scale =
exp(logvar / 2)) and the loss uses the analytic KL with the Bernoulli likelihood on sigmoid
outputs (``reconstruction_loss="bce"``); the networks are the same 784-500-500-2x50 /
50-500-500-784 ReLU MLPs. Its ``BaseTrainer`` runs the loop (a shuffled ``DataLoader`` of
batch 100, ``torch.optim.Adam`` lr 1e-3, the mean validation loss per epoch, a copy of the best
model, the final model saved under ``--workdir``). A callback prints each epoch's line: the
seconds from the start of the epoch to its log (training, validation and the best-model copy)
and minus pythae's mean validation loss as the ELBO. Runs in the benchmark's own venv:

    VENV/bin/python benchmarks/peers/run_pythae.py --data bmnist.npz --epochs 3 --workdir DIR
"""

from __future__ import annotations

import sys
import tempfile
import time

import _runner
import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback
from torch import nn


def mlp(sizes) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class Encoder(BaseEncoder):
    def __init__(self):
        BaseEncoder.__init__(self)
        self.net = mlp((_runner.X_DIM, *_runner.HIDDEN, 2 * _runner.Z_DIM))

    def forward(self, x):
        loc, log_var = self.net(x.reshape(x.shape[0], -1)).chunk(2, -1)
        return ModelOutput(embedding=loc, log_covariance=log_var)


class Decoder(BaseDecoder):
    def __init__(self):
        BaseDecoder.__init__(self)
        self.net = mlp((_runner.Z_DIM, *reversed(_runner.HIDDEN), _runner.X_DIM))

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))


class EpochLines(TrainingCallback):
    """Prints ``_runner.report`` lines from pythae's epoch events."""

    t0 = None

    def on_epoch_begin(self, training_config, **kwargs):
        self.t0 = time.perf_counter()

    def on_log(self, training_config, logs, **kwargs):
        _runner.report(kwargs["global_step"], time.perf_counter() - self.t0,
                       -logs["eval_epoch_loss"])


def main(argv=None) -> int:
    args = _runner.parser(__doc__).parse_args(argv)
    _runner.meta("pythae", "pythae", "torch", "pydantic", torch_threads=torch.get_num_threads())
    train, valid = (torch.as_tensor(a) for a in _runner.load(args.data))
    workdir = args.workdir or tempfile.mkdtemp(prefix="pythae-")
    model = VAE(VAEConfig(input_dim=(_runner.X_DIM,), latent_dim=_runner.Z_DIM,
                          reconstruction_loss="bce"), encoder=Encoder(), decoder=Decoder())
    config = BaseTrainerConfig(output_dir=str(workdir), num_epochs=args.epochs,
                               learning_rate=_runner.LR, optimizer_cls="Adam",
                               per_device_train_batch_size=_runner.BATCH,
                               per_device_eval_batch_size=_runner.EVAL_CHUNK, no_cuda=True,
                               seed=args.seed)
    pipeline = TrainingPipeline(training_config=config, model=model)
    pipeline(train_data=train, eval_data=valid, callbacks=[EpochLines()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
