"""Time of a full conformance run against the embedded reference server (target <= 60 s).

    python tests/benchmarks/bench_conformance.py [--budget SECONDS] [--rounds N]

A full run is what `mosaico-fsm conformance` does: every requirement case over Arrow Flight on
loopback, then model-based exploration for the budget (10 s by default), then the clean-up.
The figures are the requirement cases alone, the whole run, and the ratio to the target.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time

from fsm.conformance.suite import run_suite
from transport.conformance_runs import embedded_target, oracle
from transport.server.model import ServerModel

TARGET = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print("Conformance run against the embedded reference server")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    cases, whole = [], []
    for _ in range(args.rounds):
        with embedded_target(ServerModel(profile="spec")) as target:
            started = time.perf_counter()
            result = run_suite(
                target.connect,
                target=target.location,
                api_key=target.api_key,
                budget=args.budget,
                oracle=oracle,
            )
            whole.append(time.perf_counter() - started)
        cases.append(sum(v.seconds for v in result.verdicts))
        explored = result.exploration
        print(
            f"  {len(result.verdicts)} requirements ({result.count('pass')} passed) in {cases[-1]:.2f} s; "
            f"exploration {explored.runs if explored else 0} runs, {explored.steps if explored else 0} requests; "
            f"whole run {whole[-1]:.1f} s"
        )
    median = statistics.median(whole)
    print(f"requirement cases, median: {statistics.median(cases):.2f} s")
    print(
        f"whole run (budget {args.budget:g} s), median: {median:.1f} s "
        f"= {median / TARGET:.2f}x the {TARGET:.0f} s target"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
