"""Paired significance test between two evaluation outputs of the same queries.

    python -m urlkit.significance A.csv B.csv [--metric ndcg@10] [--resamples 10000]

``A.csv`` and ``B.csv`` are per-query files written by ``urlkit.evaluate`` or by a training
run's final evaluation (``<run>/per_query/<dataset>_<split>_<model>.csv``). Prints the two
means, their difference with a 95% bootstrap interval, and the randomisation p-value.
The test itself: :mod:`urlkit.evaluation.significance`.
"""

from __future__ import annotations

import argparse
import json
import sys

from urlkit.evaluation.metrics import MAIN_METRIC
from urlkit.evaluation.significance import SignificanceInputError, paired_test, read_per_query


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m urlkit.significance", description=__doc__.split("\n")[0])
    parser.add_argument("a", help="per-query CSV of system A (the baseline)")
    parser.add_argument("b", help="per-query CSV of system B")
    parser.add_argument("--metric", default=MAIN_METRIC, help="the per-query column compared (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=10_000,
                        help="resamples of the randomisation test and the bootstrap interval (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        a, b = read_per_query(args.a, args.metric), read_per_query(args.b, args.metric)
        test = paired_test(a, b, n_resamples=args.resamples, seed=args.seed, names=(args.a, args.b))
    except SignificanceInputError as err:
        raise SystemExit(str(err)) from err
    result = {"metric": args.metric, **test}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
