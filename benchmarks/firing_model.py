"""Run the firing core's fault-injecting model (tests/firing_model.py) for many seeds.

    python benchmarks/firing_model.py [--seeds 20] [--first 1] [--seconds 35]

Prints, per seed, what the client and the fault thread did, the records by status, and every
broken invariant; exits 1 if any seed broke one.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.firing_model import run_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=35.0)
    args = parser.parse_args()
    failed = 0
    for seed in range(args.first, args.first + args.seeds):
        clock = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"texium-model-{seed}-") as workdir:
            problems, actions = run_model(seed, Path(workdir), seconds=args.seconds)
        figures = ", ".join(f"{k} {v}" for k, v in sorted(actions.items()))
        verdict = "ok" if not problems else f"{len(problems)} BROKEN"
        print(f"seed {seed}: {verdict} in {time.monotonic() - clock:.0f} s; {figures}", flush=True)
        for problem in problems[:20]:
            print(f"    {problem}", flush=True)
        failed += bool(problems)
    print(f"{args.seeds - failed} of {args.seeds} seeds held every invariant")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
