"""`dslc check specs/cnn_mnist.dl` of this checkout against another checkout of an older
commit (e.g. `mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before`) and the
bare `import lark, pydantic`, the three taking turns in fresh interpreters with cached
bytecode: median wall time, median of the paired ratios, and median CPU time (less sensitive
to other programs than wall time).

    python bench/bench_check_against.py /tmp/before [--runs 21]

Run it from a folder outside both checkouts: `python -m dslc` imports dslc from the current
folder first.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", help="the other checkout (its root folder)")
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args(argv)
    if Path.cwd().resolve() in (ROOT, Path(args.other).resolve()):
        raise SystemExit("run it from a folder outside both checkouts (see the docstring)")
    trees = {"this checkout": ROOT, "other": Path(args.other).resolve()}
    with tempfile.TemporaryDirectory() as cache:
        cmds = {}
        for k, tree in trees.items():
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=f"{cache}/{tree.name}")
            cmds[k] = ([sys.executable, "-m", "dslc", "check", str(tree / "specs" / "cnn_mnist.dl")],
                       env)
        cmds["import lark, pydantic"] = ([sys.executable, "-c", "import lark, pydantic"],
                                         cmds["this checkout"][1])
        for cmd, env in cmds.values():  # write the bytecode caches
            timed(cmd, env)
            timed(cmd, env)
        walls: dict[str, list[float]] = {k: [] for k in cmds}
        cpus: dict[str, list[float]] = {k: [] for k in cmds}
        keys = list(cmds)
        for i in range(args.runs):
            for k in keys if i % 2 else keys[::-1]:
                wall, cpu = timed(*cmds[k])
                walls[k].append(wall)
                cpus[k].append(cpu)
    base = "import lark, pydantic"
    b, cb = statistics.median(walls[base]), statistics.median(cpus[base])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {args.runs} runs each; `{base}`: {b * 1e3:.0f} ms wall, "
          f"{cb * 1e3:.0f} ms CPU")
    for k in trees:
        w, c = statistics.median(walls[k]), statistics.median(cpus[k])
        paired = statistics.median(x / y for x, y in zip(walls[k], walls[base], strict=True))
        print(f"| {k} | {w * 1e3:.0f} ms = {w / b:.2f}x | paired {paired:.2f}x | "
              f"CPU {c * 1e3:.0f} ms = {c / cb:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
