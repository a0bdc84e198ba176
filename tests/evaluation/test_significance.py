"""python -m urlkit.significance pairs the two files' queries by id and refuses files it cannot pair."""

import pandas as pd
import pytest

from urlkit.evaluation.significance import SignificanceInputError, paired_test, read_per_query
from urlkit.significance import main


def _write(path, ids, values):
    pd.DataFrame({"query_id": ids, "ndcg@10": values}).to_csv(path, index=False)
    return str(path)


def test_rows_in_another_order_are_paired_by_query_id(tmp_path):
    a = _write(tmp_path / "a.csv", ["q1", "q2", "q3", "q4"], [0.1, 0.2, 0.3, 0.4])
    b = _write(tmp_path / "b.csv", ["q4", "q3", "q2", "q1"], [0.5, 0.4, 0.3, 0.2])
    result = main([a, b, "--resamples", "200"])
    assert result["diff"] == pytest.approx(0.1) and result["ci95_low"] == pytest.approx(0.1)


def test_files_of_different_queries_are_an_error_naming_them(tmp_path):
    # 2 of 4 queries shared: the test used to compare q1, q2 alone and print their means as the files'
    a = _write(tmp_path / "a.csv", ["q1", "q2", "q3", "q4"], [0.1, 0.2, 0.3, 0.4])
    c = _write(tmp_path / "c.csv", ["q1", "q2", "q8", "q9"], [0.5, 0.6, 0.3, 0.4])
    with pytest.raises(SystemExit, match=r"different queries: 2 only in .*a\.csv \(q3, q4\); 2 only in .*c\.csv \(q8, q9\)"):
        main([a, c, "--resamples", "200"])
    # no shared query at all ('001' is not '1'): the same one line, not a traceback
    e = _write(tmp_path / "e.csv", ["001", "002"], [0.5, 0.6])
    f = _write(tmp_path / "f.csv", ["1", "2"], [0.5, 0.6])
    with pytest.raises(SystemExit, match=r"different queries: 2 only in .*e\.csv \(001, 002\)"):
        main([e, f, "--resamples", "200"])
    with pytest.raises(SignificanceInputError, match="different queries"):
        paired_test(pd.Series([0.1, 0.2], index=["q1", "q2"]), pd.Series([0.1, 0.2], index=["q1", "q3"]))


def test_a_query_listed_twice_or_without_a_number_names_the_file(tmp_path):
    twice = _write(tmp_path / "twice.csv", ["q1", "q1", "q3"], [0.5, 0.6, 0.3])
    with pytest.raises(SignificanceInputError, match=r"twice\.csv: query ids listed more than once: q1"):
        read_per_query(twice, "ndcg@10")
    blank = _write(tmp_path / "blank.csv", ["q1", "q2", "q3"], [0.5, None, 0.3])
    with pytest.raises(SignificanceInputError, match=r"blank\.csv: no number in column 'ndcg@10' for queries q2"):
        read_per_query(blank, "ndcg@10")
