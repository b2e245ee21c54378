"""Differential fuzzing across backends at scale: random valid models (tests/fuzz_models.py,
the generator the suite's hypothesis test uses, here driven by a seeded `random.Random`), each
checked, compiled on every backend that emits and run on every backend that runs against
the reference interpreter. Model k uses seed `S + k` (its weights, its batch of 1 to 3 samples,
its inputs' shift of 0, -3 or +3), so any failure is reproduced alone with
`--seed S+k --models 1`.

    python bench/fuzz.py --models 2000 [--seed 0] [--failures fuzz-failures/]

Prints the counts (generated, checked, discarded, compiled, agreed, disagreed, crashed) and
saves each failing spec, with what went wrong in a comment, under the failures folder.
Exit status 1 when any model disagreed or crashed.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fuzz_models import RandomSource, Result, differential, generate  # noqa: E402

from dslc.ops import all_ops  # noqa: E402

SHIFTS = (0.0, -3.0, 3.0)


def _save(folder: Path, seed: int, text: str, result: Result) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seed{seed}_{result.outcome}.dl"
    note = "\n".join(f"# {line}" for line in
                     [f"{result.outcome} at {result.stage} (bench/fuzz.py --seed {seed} --models 1)",
                      *result.detail.strip().splitlines()[-40:]])
    path.write_text(f"{note}\n{text}", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=200, help="how many random models to try")
    ap.add_argument("--seed", type=int, default=0, help="the first model's seed")
    ap.add_argument("--failures", type=Path, default=Path("fuzz-failures"),
                    help="folder for the specs that disagreed or crashed")
    ap.add_argument("--every", type=int, default=100, help="print progress every N models")
    args = ap.parse_args(argv)

    counts: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    discards: collections.Counter[str] = collections.Counter()
    ops: collections.Counter[str] = collections.Counter()
    skipped: dict[str, str] = {}
    start = time.perf_counter()
    for k in range(args.models):
        seed = args.seed + k
        text = generate(RandomSource(seed))
        counts["generated"] += 1
        # batch 1 finds squeezed axes; shifted inputs, padding that is not neutral
        result = differential(text, seed, batch=1 + seed % 3, shift=SHIFTS[seed // 3 % 3])
        if result.stage != "check":
            counts["checked"] += 1
            ops.update(result.ops)
            if not result.stage.startswith("compile"):
                counts["compiled"] += 1
        counts[result.outcome] += 1
        skipped.update(result.skipped)
        if result.outcome == "discarded":
            discards[result.stage] += 1
            _save(args.failures / "discarded", seed, text, result)
        elif result.outcome != "agreed":
            stages[result.stage] += 1
            path = _save(args.failures, seed, text, result)
            print(f"seed {seed}: {result.outcome} at {result.stage} -> {path}", flush=True)
        elif result.pairs_apart:
            counts["pairs apart"] += 1
            print(f"seed {seed}: agreed with the reference; {result.detail}", flush=True)
        if args.every and (k + 1) % args.every == 0:
            print(f"  {k + 1} models, {time.perf_counter() - start:.0f} s", flush=True)

    names = ["generated", "checked", "discarded", "compiled", "agreed", "disagreed", "crashed"]
    print(f"\nseeds {args.seed}..{args.seed + args.models - 1}, "
          f"{time.perf_counter() - start:.0f} s")
    for name in names:
        print(f"  {name:<10} {counts[name]:>6}")
    print(f"  (of the agreed, {counts['pairs apart']} had two frameworks beyond tolerance of "
          "each other, each within it of the reference)")
    for stage, n in sorted(discards.items()):
        print(f"  discarded at {stage}: {n}")
    for stage, n in sorted(stages.items()):
        print(f"  failures at {stage}: {n}")
    for name, why in skipped.items():
        print(f"  not run: {name} ({why})")
    missing = sorted(set(all_ops()) - set(ops))
    print(f"  ops covered: {len(all_ops()) - len(missing)}/{len(all_ops())}"
          + (f" (never: {', '.join(missing)})" if missing else ""))
    return 1 if counts["disagreed"] or counts["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())
