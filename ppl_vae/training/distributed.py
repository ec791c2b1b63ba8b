"""torch.distributed for ppl_vae: data-parallel training, sharded evaluation, estimator grids.

One process per worker (rank), started by ``torchrun`` or by ``ppl-vae CMD --nproc N`` (which runs
the same command under torch's elastic launcher). Workers talk through a ``torch.distributed``
process group: gloo on CPU, nccl on CUDA (one GPU per local rank). Nothing here changes a
single-process run: with no process group every helper is the identity.

* **Training** (:class:`GradientSync`): every step's global batch of B points (the same on every
  rank: the permutation comes from (seed, epoch)) is split into N contiguous shards of about B/N
  points; each rank computes its shard's loss with ``num_data`` = the training-set size, and the
  gradients of exactly the tensors :class:`~ppl_vae.infer.svi.SVI` optimizes are summed in one
  flattened all-reduce with weights b_r / B, so the result is the single-process gradient of the
  global batch. Stateful estimators stay consistent: decaying-average baselines are averaged
  across ranks after each step, a neural baseline is an SVI-optimized module like the others.
* **Evaluation** (:func:`shard_bounds`, :func:`gather`): contiguous shards of the data points;
  per-point random streams come from (seed, data index), so the gathered per-point results do
  not depend on the number of workers.
* **Grids** (:func:`my_items`): objectives are dealt round-robin over the ranks.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ppl_vae.errors import ConfigError, DistributedError, PplVaeError

__all__ = [
    "GradientSync", "add_arguments", "barrier", "broadcast_modules", "collective",
    "sharded_log_likelihood", "failure_test_hook", "from_rank0", "gather", "is_main", "launch",
    "launched_by_torchrun", "my_items", "process_group", "rank", "run_command", "shard_bounds",
    "sync_averages", "world_size",
]

TIMEOUT_ENV = "PPL_VAE_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for a peer before failing
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------------------
# rank, world, process group
# ------------------------------------------------------------------------------------------
def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the rank that writes files."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process is a worker started by torchrun / the elastic launcher."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def _timeout(seconds: float | None) -> datetime.timedelta:
    if seconds is None:
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    if not seconds > 0:
        raise ConfigError(f"the process-group timeout must be > 0 seconds, got {seconds}")
    return datetime.timedelta(seconds=float(seconds))


def _rank_device(device) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per local rank)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    local = int(os.environ.get("LOCAL_RANK", 0))
    if local >= torch.cuda.device_count():
        raise ConfigError(f"local rank {local} needs GPU {local}, but only "
                          f"{torch.cuda.device_count()} GPU(s) are visible")
    return torch.device("cuda", local)


@contextmanager
def process_group(device="cpu", timeout: float | None = None):
    """Join the process group described by torchrun's environment variables (gloo on CPU,
    nccl on CUDA) for the duration of the block; yields this rank's device."""
    device = _rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # nccl, bound to this rank's GPU
        dist.init_process_group("nccl", timeout=_timeout(timeout), device_id=device)
    else:
        dist.init_process_group("gloo", timeout=_timeout(timeout))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def collective(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a ``torch.distributed`` collective; its failure (a peer died or
    hung past the timeout) becomes one :class:`DistributedError` line instead of a traceback."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # torch.distributed.DistError and gloo/nccl errors
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise DistributedError(
            f"{fn.__name__} failed: another worker died, hung past the timeout "
            f"or cannot be reached ({lines[0][:160]})") from exc


def barrier() -> None:
    if world_size() > 1:
        collective(dist.barrier)


KILL_RANK_ENV = "PPL_VAE_TEST_KILL_RANK"  # tests only: this rank dies (or hangs) ...
KILL_EPOCH_ENV = "PPL_VAE_TEST_KILL_EPOCH"  # ... at the start of this epoch (default 2)
KILL_MODE_ENV = "PPL_VAE_TEST_KILL_MODE"  # "exit" (default) or "hang"


def failure_test_hook(epoch: int) -> None:
    """For the failure tests only, and only when ``$PPL_VAE_TEST_KILL_RANK`` is set: that
    rank exits abruptly (``os._exit(1)``, no clean-up; or, with ``$PPL_VAE_TEST_KILL_MODE`` =
    ``hang``, stops responding) at the start of epoch ``$PPL_VAE_TEST_KILL_EPOCH`` (1-based,
    default 2), as a crashed or stuck worker would."""
    victim = os.environ.get(KILL_RANK_ENV)
    if victim is None or world_size() == 1 or int(victim) != rank() \
            or epoch != int(os.environ.get(KILL_EPOCH_ENV, 2)):
        return
    mode = os.environ.get(KILL_MODE_ENV, "exit")
    sys.stderr.write(f"rank {rank()}: ${KILL_RANK_ENV} set, {mode} at epoch {epoch}\n")
    sys.stderr.flush()
    if mode == "hang":
        time.sleep(10**6)
    os._exit(1)


# ------------------------------------------------------------------------------------------
# moving objects between ranks
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def broadcast_modules(*modules) -> None:
    """Copy rank 0's parameters and buffers into every rank's modules (what DDP does at start),
    so the ranks start identical whatever their RNG did. Lazy parameters are skipped."""
    if world_size() == 1:
        return
    for module in modules:
        for tensor in module.state_dict(keep_vars=True).values():
            if isinstance(tensor, torch.nn.parameter.UninitializedParameter):
                continue
            collective(dist.broadcast, tensor.data, src=0)


def from_rank0(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on rank 0 only, its result sent to every rank (a picklable
    object). An exception on rank 0 is raised on every rank (a :class:`PplVaeError` as itself,
    others as a ``RuntimeError`` naming them), so no rank waits for a result that never comes."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    box = [None, None]
    if is_main():
        try:
            box[0] = fn(*args, **kwargs)
        except PplVaeError as exc:
            box[1] = exc
        except Exception as exc:
            box[1] = RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")
            collective(dist.broadcast_object_list, box, src=0)
            raise
    collective(dist.broadcast_object_list, box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]


def gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    collective(dist.all_gather_object, out, obj)
    return out


def shard_bounds(n: int, rank_: int | None = None, world: int | None = None,
                 align: int = 1) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank_``'s contiguous shard of ``n`` items: blocks of ``align``
    items dealt as evenly as possible, in rank order (shards may be empty when n is small)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    blocks = -(-n // align)
    start = min(n, (blocks * rank_ // world) * align)
    stop = min(n, (blocks * (rank_ + 1) // world) * align)
    return start, stop


def my_items(items) -> list:
    """This rank's share of ``items``, dealt round-robin: ``items[rank::world]``."""
    return list(items)[rank()::world_size()]


# ------------------------------------------------------------------------------------------
# sharded evaluation
# ------------------------------------------------------------------------------------------
def sharded_log_likelihood(model, guide, x, estimator: str, num_samples: int, *, seed: int,
                            align: int = 1, **options):
    """:func:`ppl_vae.marginal.estimate_log_likelihood` on this rank's contiguous shard of
    ``x`` (boundaries at multiples of ``align``, e.g. the chunk size), with point i's randomness
    drawn from (``seed``, i) (``index_offset`` = the shard's start); returns the result for all
    of ``x``, gathered in index order, on every rank. The per-point values do not depend on the
    number of ranks."""
    from ppl_vae.marginal import estimate_log_likelihood as estimate
    from ppl_vae.marginal.result import concat_results

    start, stop = shard_bounds(int(x.shape[0]), align=max(1, int(align)))
    part = None
    if stop > start:
        part = estimate(model, guide, x[start:stop], estimator, num_samples, seed=seed,
                        index_offset=start, **options)
    return concat_results(gather(part))


# ------------------------------------------------------------------------------------------
# data-parallel gradients
# ------------------------------------------------------------------------------------------
class GradientSync:
    """The :attr:`SVI.grad_hook <ppl_vae.infer.svi.SVI.grad_hook>` of data-parallel training.

    After each backward pass, sums ``weight * grad`` over the ranks for every tensor SVI
    optimizes, in one flattened all-reduce that also carries ``weight * loss`` and a flag per
    tensor (a tensor keeps ``grad=None`` only if no rank produced a gradient for it). With
    ``weight`` = this rank's share b_r / B of the global batch and each shard's loss computed
    with ``num_data`` = the training-set size, the result is the single-process gradient and loss
    of the global batch, identical on every rank (so all ranks take the same Adam step, and all
    skip it when the loss is not finite). Then the decaying-average baselines are synchronized
    (:func:`sync_averages`).
    """

    def __init__(self):
        self.weight = 1.0

    def __call__(self, svi, loss: float) -> float:
        if world_size() == 1:
            return loss
        loss = self._all_reduce(svi.parameters(), loss)
        sync_averages(svi.objective)
        return loss

    @torch.no_grad()
    def _all_reduce(self, params, loss: float) -> float:
        w = float(self.weight)
        dtypes = {p.dtype for p in params}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
        grads = [p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
                 for p in params]
        meta = [w * loss if w else 0.0] + [float(p.grad is not None) for p in params]
        bucket = torch.cat([torch.cat(grads).to(dtype).mul_(w),
                            torch.tensor(meta, dtype=dtype, device=params[0].device)])
        collective(dist.all_reduce, bucket)
        meta = bucket[-len(meta):].tolist()
        offset = 0
        for p, has_grad in zip(params, meta[1:]):
            k = p.numel()
            p.grad = bucket[offset: offset + k].view_as(p).to(p.dtype) if has_grad else None
            offset += k
        return meta[0]


@torch.no_grad()
def sync_averages(objective) -> None:
    """Average the decaying-average baselines of ``objective`` (``elbo.averages``, one tensor per
    latent site, kept per position in the rank's batch shard) across ranks, so every rank
    subtracts the same baseline. Where the ranks' shards differ in size (an uneven last batch),
    every rank gets the overall mean over all positions and ranks instead."""
    averages = getattr(getattr(objective, "elbo", None), "averages", None)
    if not averages or world_size() == 1:
        return
    for name in sorted(averages):
        t = averages[name].clone()
        sizes = torch.tensor([t.numel(), -t.numel()], device=t.device)
        collective(dist.all_reduce, sizes, op=dist.ReduceOp.MAX)
        if int(sizes[0]) == -int(sizes[1]):
            collective(dist.all_reduce, t)
            averages[name] = t / world_size()
        else:
            total = torch.stack([t.sum(), torch.tensor(float(t.numel()), device=t.device)])
            collective(dist.all_reduce, total)
            averages[name] = torch.full_like(t, float(total[0] / total[1]))


# ------------------------------------------------------------------------------------------
# command line: --nproc, torchrun workers, the elastic launcher
# ------------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    """``--nproc`` and ``--dist-timeout`` for a command that runs distributed."""
    g = p.add_argument_group("distributed (torch.distributed; see docs/distributed.md)")
    g.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run N worker processes on this machine with torch's elastic launcher "
                        "(gloo on CPU; nccl and one GPU per worker with --device cuda)")
    g.add_argument("--dist-timeout", type=float, default=None, metavar="S",
                   help=f"seconds a worker waits for the others before failing (default "
                        f"${TIMEOUT_ENV} or {DEFAULT_TIMEOUT:g})")


def _check_launch(nproc, device, timeout) -> None:
    if nproc is not None and nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    _timeout(timeout)
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device: {exc}") from None
    if nproc and nproc > 1 and device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc {nproc} with --device cuda needs {nproc} GPUs (one per "
                          f"worker), but {torch.cuda.device_count()} are visible")


def run_command(args, argv, run) -> int:
    """Run the parsed command ``run(args)``: as a torchrun worker inside the process group
    (``args.device`` becomes this rank's device), by launching ``args.nproc`` workers with
    ``argv``, or plainly in this process."""
    nproc = getattr(args, "nproc", None)
    _check_launch(nproc, args.device, args.dist_timeout)
    if launched_by_torchrun():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if nproc is not None and nproc != local:
            raise ConfigError(f"--nproc {nproc} disagrees with torchrun's {local} local workers")
        with process_group(args.device, args.dist_timeout) as device:
            args.device = str(device)
            return run(args)
    if not nproc or nproc == 1:
        return run(args)
    return launch(args.command, argv, nproc)


def launch(command: str, argv, nproc: int) -> int:
    """``python -m ppl_vae *argv`` in ``nproc`` workers on this machine (torch's elastic
    launcher, the machinery of ``torchrun --standalone``; rendezvous on 127.0.0.1). If a worker
    fails, the launcher stops the others; this prints one line naming the first failure and
    returns 2 if it was a usage error (exit code 2), else 1."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=f"ppl-vae-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    log = logging.getLogger("torch.distributed.elastic")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its own report of the failure is a page; ours is a line
    try:
        elastic_launch(config, sys.executable)("-m", "ppl_vae", *argv)
    except ChildFailedError as exc:
        worker, failure = exc.get_first_failure()
        print(f"ppl-vae {command}: error: worker rank {worker} failed (exit code "
              f"{failure.exitcode}); the launcher stopped the other workers", file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    finally:
        log.setLevel(level)
    return 0
