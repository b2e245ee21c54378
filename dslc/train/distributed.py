"""`dslc train` on several processes: torch DistributedDataParallel, driven through torchrun.

- `dslc train SPEC --nproc N` starts N local processes with torchrun (`torch.distributed.run
  --standalone`), each running `dslc train SPEC ... --distributed`.
- `torchrun --nnodes M --nproc_per_node N --rdzv_backend c10d --rdzv_endpoint HOST:PORT
  -m dslc train SPEC --distributed` does the same across machines (docs/scale.md).

Every process loads the same data with the same seed, so the split, each epoch's shuffle
(from seed and epoch) and the augmentation agree; each takes its contiguous share of every
global batch (the spec's `batch`; dslc/backends/torch/trainer.py `shard`), the gradients are
averaged by DDP, the batch losses and predictions gathered, so the history and metrics.json
are those of one process. Only rank 0 writes files (each atomically) and prints progress.
Process group operations time out after `DSLC_DIST_TIMEOUT` seconds (default 300), and
torchrun stops every worker when one fails, so a dead worker ends the run with an error
instead of a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from dslc.diagnostics import DslError

ENV_TIMEOUT = "DSLC_DIST_TIMEOUT"
FAIL_RANK = "DSLC_TEST_FAIL_RANK"  # the rank that exits at once (the failure test's worker)


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    device: str  # this process's device: cpu, or cuda:<local rank>
    framework: str = "torch"  # or "keras": a MultiWorkerMirroredStrategy worker

    @property
    def writes(self) -> bool:
        return self.rank == 0


def shard(size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch of `size` for process (or replica) `rank` of `world`:
    contiguous, sizes differing by at most one (DistributedSampler's split of each global
    batch)."""
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def in_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def wanted(args: Any) -> bool:
    return bool(getattr(args, "distributed", False))


def timeout() -> timedelta:
    value = os.environ.get(ENV_TIMEOUT, "300")
    try:
        seconds = float(value)
    except ValueError:
        raise DslError(f"{ENV_TIMEOUT} must be a number of seconds, got {value!r}") from None
    return timedelta(seconds=seconds)


def setup(device: str) -> Group:
    """Join the torchrun process group: gloo on CPU, nccl on CUDA (one GPU a process, by
    local rank; gloo when processes outnumber the GPUs and share them)."""
    if not in_torchrun():
        raise DslError("--distributed trains inside a torchrun process group, and there is none",
                       hint="use `dslc train SPEC --nproc N`, or `torchrun --nproc_per_node N "
                            "-m dslc train SPEC --distributed`")
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DslError("`--device cuda` but PyTorch sees no CUDA GPU",
                           hint="use `--device cpu` (gloo), or `auto`")
        device = f"cuda:{local % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    # NCCL takes one GPU a process; more processes than GPUs share them over gloo.
    nccl = device.startswith("cuda") and local_world <= torch.cuda.device_count()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if nccl else "gloo", timeout=timeout())
    if os.environ.get(FAIL_RANK) == str(dist.get_rank()):  # tests: a worker that dies
        os._exit(3)
    return Group(dist.get_rank(), dist.get_world_size(), device)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: list[str], nproc: int) -> int:
    """Run `dslc <argv> --distributed` on `nproc` local processes under torchrun."""
    if nproc < 1:
        raise DslError(f"--nproc must be at least 1, got {nproc}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "dslc", *without_nproc(argv), "--distributed"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise DslError(f"training on {nproc} processes failed (torchrun exit status "
                       f"{done.returncode}); the failing process's error is above")
    return 0
