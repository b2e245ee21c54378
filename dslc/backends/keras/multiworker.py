"""`dslc train --backend keras` on several processes: tf.distribute.MultiWorkerMirroredStrategy.

- `dslc train SPEC --backend keras --nproc N` starts N local workers, each running `dslc train
  SPEC ... --distributed` with its own `TF_CONFIG` (a cluster of N loopback ports chosen free,
  task index = rank). When one fails the launcher stops the others and fails with its status.
- Workers started by hand (several machines) set `TF_CONFIG` themselves (docs/scale.md).

Every worker loads the same data with the same seed and takes its contiguous share of every
global batch by its replica id (dslc/train/distributed.py `shard`, as the torch path and
MirroredStrategy do); the gradients are all-reduced by TensorFlow's collective ops (gRPC on
CPU, NCCL on GPUs). Only worker 0 writes files and prints progress (dslc/train/run.py).

No hang on a failed worker: the start waits at most `DSLC_DIST_TIMEOUT` seconds (default 300)
for the cluster, and once it runs, TensorFlow's health check aborts the collectives when a
peer stops answering (within about a minute: a check every 30 s, three tries of 10 s).
Nothing here imports TensorFlow before the worker builds its strategy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from dslc.diagnostics import DslError
from dslc.train.distributed import FAIL_RANK, Group, timeout, without_nproc

ENV = "TF_CONFIG"
LOCAL_RANK = "DSLC_LOCAL_RANK"  # set by the launcher: this worker's GPU on a shared machine
LOCAL_WORLD = "DSLC_LOCAL_WORLD"

HOW = ("use `dslc train SPEC --backend keras --nproc N`, or start one `dslc train SPEC --backend "
       "keras --distributed` per worker with its TF_CONFIG (docs/scale.md)")


def in_worker() -> bool:
    return ENV in os.environ


def cluster() -> tuple[int, int]:
    """(rank, world) from TF_CONFIG: workers in cluster order, a `chief` first when given."""
    raw = os.environ.get(ENV)
    if not raw:
        raise DslError("--distributed with the keras backend trains as one worker of a "
                       "TF_CONFIG cluster, and TF_CONFIG is not set", hint=HOW)
    try:
        config = json.loads(raw)
        jobs = config["cluster"]
        task = config["task"]
        kind, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(jobs.get("chief", [])), list(jobs.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DslError(f"TF_CONFIG is not a cluster description ({err.__class__.__name__}: "
                       f"{err})", hint='e.g. {"cluster": {"worker": ["host1:12345", '
                       '"host2:12345"]}, "task": {"type": "worker", "index": 0}}') from None
    offset = {"chief": 0, "worker": len(chiefs)}.get(kind)
    size = {"chief": len(chiefs), "worker": len(workers)}.get(kind, 0)
    if offset is None or not 0 <= index < size or len(chiefs) > 1:
        raise DslError(f"TF_CONFIG's task {kind} {index} is not one of its cluster's "
                       f"{len(chiefs)} chief and {len(workers)} worker task(s)",
                       hint="tasks are `worker` (and at most one `chief`), indexed from 0")
    return offset + index, len(chiefs) + len(workers)


def setup(device: str) -> Group:
    """This worker's place in the TF_CONFIG cluster (the strategy itself is built by the
    trainer, before TensorFlow runs anything)."""
    rank, world = cluster()
    if os.environ.get(FAIL_RANK) == str(rank):  # tests: a worker that dies
        os._exit(3)
    return Group(rank, world, device, framework="keras")


def strategy(tf: Any) -> Any:
    """The MultiWorkerMirroredStrategy of this worker; waits for the whole cluster (at most
    DSLC_DIST_TIMEOUT seconds). On a machine shared by the launcher's workers, each takes one
    GPU (by local rank) when there are enough; a worker started by hand uses all it sees."""
    gpus = tf.config.list_physical_devices("GPU")
    local, local_world = os.environ.get(LOCAL_RANK), os.environ.get(LOCAL_WORLD)
    if gpus and local is not None and local_world is not None:
        mine = gpus[int(local) % len(gpus)] if int(local_world) <= len(gpus) else None
        tf.config.set_visible_devices([mine] if mine is not None else [], "GPU")
    from tensorflow.python.distribute import collective_all_reduce_strategy as car

    seconds = timeout().total_seconds()
    # The cluster start-up barrier waits forever by default; the health check after it
    # notices a dead peer by itself.
    extended: Any = getattr(car, "CollectiveAllReduceExtended", None)
    if extended is not None and hasattr(extended, "_check_health_initial_timeout"):
        extended._check_health_initial_timeout = max(1, int(seconds))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        if "Timeout waiting for the cluster" not in str(err):
            raise
        rank, world = cluster()
        raise DslError(f"keras worker {rank} of {world}: the other workers did not join within "
                       f"{seconds:g} s ({os.environ.get(ENV)})",
                       hint="start every worker of TF_CONFIG's cluster, with reachable "
                            "addresses; DSLC_DIST_TIMEOUT sets the wait") from None


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(argv: list[str], nproc: int) -> int:
    """Run `dslc <argv> --distributed` on `nproc` local keras workers (one TF_CONFIG each)."""
    if nproc < 1:
        raise DslError(f"--nproc must be at least 1, got {nproc}")
    addresses = [f"127.0.0.1:{p}" for p in free_ports(nproc)]
    command = [sys.executable, "-m", "dslc", *without_nproc(argv), "--distributed"]
    workers = []
    try:
        for rank in range(nproc):
            config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}}
            env = {**os.environ, ENV: json.dumps(config), LOCAL_RANK: str(rank),
                   LOCAL_WORLD: str(nproc), "PYTHONUNBUFFERED": "1"}
            workers.append(subprocess.Popen(command, env=env))
        failed = _wait(workers)
    finally:
        _stop(workers)
    if failed is not None:
        rank, status = failed
        raise DslError(f"training on {nproc} keras workers failed (worker {rank} exit status "
                       f"{status}); the failing worker's error is above")
    return 0


def _wait(workers: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Until every worker has exited; the first failure (rank, status) ends the wait."""
    while True:
        statuses = [w.poll() for w in workers]
        for rank, status in enumerate(statuses):
            if status not in (None, 0):
                return rank, status
        if all(s == 0 for s in statuses):
            return None
        time.sleep(0.2)


def _stop(workers: list[subprocess.Popen]) -> None:
    """Stop the workers still running (a failed peer, Ctrl-C): SIGTERM, then SIGKILL."""
    running = [w for w in workers if w.poll() is None]
    for w in running:
        w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for w in running:
        try:
            w.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
