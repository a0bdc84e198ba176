"""Paired significance test between two evaluation outputs of the same queries.

    python -m urlkit.significance A.csv B.csv [--metric ndcg@10] [--resamples 10000]

``A.csv`` and ``B.csv`` are per-query files written by ``urlkit.evaluate`` or by a training
run's final evaluation (``<run>/per_query/<dataset>_<split>_<model>.csv``). Prints the two
means, their difference with a 95% bootstrap interval, and the randomisation p-value.
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from urlkit.evaluation.metrics import MAIN_METRIC, paired_test


def read_per_query(path: str, metric: str) -> pd.Series:
    try:
        frame = pd.read_csv(path, index_col="query_id", dtype={"query_id": str})
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"{path}: cannot read per-query metrics ({err})") from err
    if metric not in frame.columns:
        raise SystemExit(f"{path}: no column {metric!r}; columns are {', '.join(frame.columns)}")
    return frame[metric]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m urlkit.significance", description=__doc__.split("\n")[0])
    parser.add_argument("a", help="per-query CSV of system A (the baseline)")
    parser.add_argument("b", help="per-query CSV of system B")
    parser.add_argument("--metric", default=MAIN_METRIC)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    a, b = read_per_query(args.a, args.metric), read_per_query(args.b, args.metric)
    result = {"metric": args.metric, **paired_test(a, b, n_resamples=args.resamples, seed=args.seed)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
