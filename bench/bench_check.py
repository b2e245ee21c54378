"""The front end's speed, which the tests guard by counting work instead (no clock in tests):
`dslc check` against the bare `import lark, pydantic` it cannot avoid, a 5,000-layer spec,
and how soon runaway specs (exponential blocks, nested `repeat`) are rejected.

    python bench/bench_check.py [--runs 7]
    python bench/bench_check.py --python /tmp/wheel/bin/python   # a wheel install's start-up
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dslc.compiler import compile_text  # noqa: E402
from dslc.diagnostics import DslError  # noqa: E402


def wall(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - t


def startup(runs: int, python: str | None = None) -> tuple[float, float, float]:
    """Median wall times of `dslc check specs/cnn_mnist.dl` and of `import lark, pydantic`, and
    the median of their paired ratios, in fresh interpreters with cached bytecode (as after a
    wheel install), taking turns. `python`: another interpreter whose installed dslc is timed
    (a venv with the wheel: no editable-install finder in its start-up), from an empty folder."""
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        if python is None:
            env["PYTHONPYCACHEPREFIX"] = cache
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        else:
            env.pop("PYTHONPATH", None)
        exe = python or sys.executable
        base = [exe, "-c", "import lark, pydantic"]
        check = [exe, "-m", "dslc", "check", str(ROOT / "specs" / "cnn_mnist.dl")]
        wall(base, env, cache), wall(check, env, cache)  # write the bytecode caches
        bases, checks = [], []
        for _ in range(runs):
            bases.append(wall(base, env, cache))
            checks.append(wall(check, env, cache))
    paired = statistics.median(c / b for c, b in zip(checks, bases))
    return statistics.median(checks), statistics.median(bases), paired


def in_process(fn, runs: int) -> tuple[float, float]:
    """Best and median seconds of `fn()`."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def layers_spec(n: int) -> str:
    body = "\n".join(["dense(16, activation=relu)"] * n)
    return f"model big {{\n input x: f32[16]\n{body}\n dense(1)\n}}\n"


def exponential_blocks() -> str:
    blocks = ["block b0(n: int) { input x\n relu(x) }"]
    for i in range(1, 25):
        blocks.append(f"block b{i}(n: int) {{ input x\n h = b{i - 1}(x, n)\n"
                      f" k = b{i - 1}(x, n)\n output add(h, k) }}")
    return "\n".join(blocks) + "\nmodel m { input x: f32[4]\n b24(1) }\n"


NESTED_REPEAT = "model m { input x: f32[4]\n repeat 1000 { repeat 1000 { repeat 1000 { relu } } } }\n"
EMPTY_REPEAT = "model m { input x: f32[4]\n dense(2)\n repeat 1000000000 { } }\n"


def rejected(src: str):
    def run():
        try:
            compile_text(src, "t.dl")
        except DslError:
            return
        raise AssertionError("the spec was accepted")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--python", help="time this interpreter's installed dslc instead (e.g. "
                                     "a venv with the wheel), start-up only")
    args = ap.parse_args()

    ours, base, paired = startup(args.runs, args.python)
    rows = [("`dslc check specs/cnn_mnist.dl` / `import lark, pydantic` (median, fresh process; "
             "median of the paired ratios)",
             f"{ours:.3f} s / {base:.3f} s = {ours / base:.2f}x; paired {paired:.2f}x")]
    if args.python:
        print(f"{args.python}, load average {os.getloadavg()[0]:.2f}")
        print(f"| figure | value |\n|---|---|\n| {rows[0][0]} | {rows[0][1]} |")
        return
    compile_text(layers_spec(2), "warm.dl")  # imports, parser tables, validators
    best, med = in_process(lambda: compile_text(layers_spec(5000), "big.dl"), args.runs)
    half, _ = in_process(lambda: compile_text(layers_spec(2500), "half.dl"), args.runs)
    rows.append(("check a 5,000-layer spec, in process (best / median)",
                 f"{best:.3f} s / {med:.3f} s; 2,500 layers {half:.3f} s "
                 f"(ratio {best / half:.2f})"))
    for name, src in (("reject exponential blocks (2**24 layers asked)", exponential_blocks()),
                      ("reject nested `repeat` (10**9 layers asked)", NESTED_REPEAT),
                      ("reject `repeat 1000000000 { }`", EMPTY_REPEAT)):
        best, med = in_process(rejected(src), max(3, args.runs // 2))
        rows.append((name + " (best / median)", f"{best:.3f} s / {med:.3f} s"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
