"""The exact McNemar p-value: the former sum of binomial coefficients against the binomial CDF, side by side.

Issue 28 measured 13 s at 8,000 / 8,400 discordant pairs and about 180 s at 20,000 / 20,500 (a CivilComments-sized
test split) for the sum. Both are timed here in one run, alternating, and must agree to 1e-12 (relative):

    python benchmarks/significance_speed.py [--pairs 8000 8400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from lmshrink.machine import cpu_line
from lmshrink.metrics.significance import mcnemar_exact_p
from lmshrink.errors import at_least_one, run_command


def summed_p(b: int, c: int) -> float:
    """The former implementation: ``2 * sum(comb(n, i) for i <= min(b, c)) / 2^n`` in exact integers."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n) if n else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs=2, default=[8000, 8400], metavar=("B", "C"))
    parser.add_argument("--repeats", type=at_least_one, default=3)
    args = parser.parse_args()
    b, c = args.pairs
    times = {"sum": [], "cdf": []}
    values = {}
    for _ in range(args.repeats):
        for name, function in (("sum", summed_p), ("cdf", mcnemar_exact_p)):
            start = time.perf_counter()
            values[name] = function(b, c)
            times[name].append(time.perf_counter() - start)
    assert math.isclose(values["sum"], values["cdf"], rel_tol=1e-12), values
    old, new = statistics.median(times["sum"]), statistics.median(times["cdf"])
    print(f"CPU: {cpu_line()}")
    print(f"exact McNemar at {b:,} / {c:,} discordant pairs: p = {values['cdf']:.6g} (both agree to 1e-12)")
    print(f"sum of coefficients {old:.3f} s, binomial CDF {new * 1e3:.3f} ms: {old / new:,.0f}x faster "
          f"(median of {args.repeats}, alternating)")


if __name__ == "__main__":  # a user mistake is one error: line (exit 2), as lmshrink's own commands print it
    raise SystemExit(run_command(lambda _argv: main() or 0))
