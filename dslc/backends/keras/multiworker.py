"""`dslc train --backend keras` on several processes: tf.distribute.MultiWorkerMirroredStrategy.

- `dslc train SPEC --backend keras --nproc N` starts N local workers, each running `dslc train
  SPEC ... --distributed` with its own `TF_CONFIG` (a cluster of N loopback ports chosen free,
  task index = rank). When one fails the launcher stops the others and fails with its status.
- Workers started by hand (several machines) set `TF_CONFIG` themselves (docs/scale.md).

Every worker loads the same data with the same seed and takes its contiguous share of every
global batch by its replica id (dslc/train/distributed.py `shard`, as the torch path and
MirroredStrategy do); the gradients are all-reduced by TensorFlow's collective ops (gRPC on
CPU, NCCL on GPUs). Only worker 0 writes files and prints progress (dslc/train/run.py).

No hang on a failed worker: a worker waits at most `DSLC_DIST_TIMEOUT` seconds (default 300)
for the cluster to form (a watchdog process ends it with an error), the launcher stops every
worker when one exits with an error, and in a running cluster TensorFlow's coordination
service notices a peer that stops sending heartbeats and fails the collectives.
Nothing here imports TensorFlow before the worker builds its strategy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from dslc.diagnostics import DslError
from dslc.train.distributed import ENV_TIMEOUT, FAIL_RANK, Group, timeout, without_nproc

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


def strategy(tf: Any, device: str) -> Any:
    """The MultiWorkerMirroredStrategy of this worker; waits for the whole cluster (at most
    DSLC_DIST_TIMEOUT seconds). `--device cpu` hides the GPUs (the strategy would take them).
    On a machine shared by the launcher's workers each takes one GPU, by local rank (workers
    outnumbering the GPUs share them); a worker started by hand uses every GPU it sees."""
    gpus = tf.config.list_physical_devices("GPU")
    local, local_world = os.environ.get(LOCAL_RANK), os.environ.get(LOCAL_WORLD)
    if gpus and device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif gpus and local is not None and local_world is not None:
        mine = gpus[int(local) % len(gpus)]
        tf.config.set_visible_devices([mine], "GPU")
        if int(local_world) > len(gpus):
            tf.config.experimental.set_memory_growth(mine, True)
    cancel = _watchdog(timeout().total_seconds())
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.UnknownError as err:
        if "Could not start gRPC server" not in str(err):
            raise
        rank, world = cluster()
        raise DslError(f"keras worker {rank} of {world} could not listen on its TF_CONFIG "
                       "address (taken by another process?)", hint=os.environ.get(ENV)) from None
    finally:
        cancel()


# The watchdog: a small process that waits on a pipe; closing it (the cluster formed) ends
# it, and if the wait runs out it prints the error and kills the worker.
_WATCHDOG = """
import os, select, signal, sys
fd, seconds, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ready, _, _ = select.select([fd], [], [], seconds)
if not ready:
    sys.stderr.write(sys.argv[4])
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


def _watchdog(seconds: float) -> Callable[[], None]:
    """Kill this worker with a clear error when the cluster has not formed after `seconds`;
    the returned function calls it off. TensorFlow waits for every TF_CONFIG task without a
    time limit, in C++ that holds the GIL and ignores SIGTERM: no thread or signal handler of
    this process could end the wait, so another process does."""
    rank, world = cluster()
    message = (f"error: keras worker {rank} of {world}: the other workers did not join within "
               f"{seconds:g} s (TF_CONFIG {os.environ.get(ENV)})\nhint: start every worker of "
               f"TF_CONFIG's cluster, with reachable addresses; {ENV_TIMEOUT} sets the wait\n")
    read, write = os.pipe()
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(read), str(seconds),
                                str(os.getpid()), message], pass_fds=(read,))
    os.close(read)

    def cancel() -> None:
        os.close(write)  # the watchdog sees end-of-file and exits
        watcher.wait()

    return cancel


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
    deadline = time.monotonic() + 3  # TensorFlow waiting on its peers ignores SIGTERM
    for w in running:
        try:
            w.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
