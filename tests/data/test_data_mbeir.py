"""M-BEIR as UniIR publishes it: a root, a dataset name, the split folders, pools, qrels, instructions."""

from __future__ import annotations

import json

import pytest
from helpers.data_builders import mbeir_root, mbeir_tree, write_instructions, write_jsonl

from urlkit.data import DataError, load_split
from urlkit.data.format import MissingSplitError
from urlkit.data.mbeir import TASK_CATEGORIES


def _ids(split):
    return [q.id for q in split.queries]


def test_each_split_comes_from_its_own_folder(tmp_path):
    root = mbeir_tree(tmp_path / "M-BEIR")
    train = load_split(root, "train", dataset="toy_task7")
    dev = load_split(root, "dev", dataset="toy_task7")  # urlkit's dev is M-BEIR's val
    test = load_split(root, "test", dataset="toy_task7")
    assert _ids(train)[0] == "7:100" and _ids(dev)[0] == "7:200" and _ids(test)[0] == "7:300"
    assert not set(_ids(train)) & set(_ids(test)) and not set(_ids(dev)) & set(_ids(test))
    assert train.source.endswith("query/train/mbeir_toy_train.jsonl")  # per dataset, as M-BEIR ships it
    assert train.name == "toy_task7" and len(train.queries) == 8  # its task-3 lines left out
    assert "2 lines of other tasks than task 7 left out" in train.report()
    assert test.name == "toy_task7" and len(test.corpus) == 8  # the task's local pool
    assert test.corpus["7:3"].image.endswith("mbeir_images/toy_images/c3.png")
    assert test.queries[0].negatives == ["7:0"] and test.queries[0].positives == ["7:1"]


def test_instructions_come_from_the_tsv_with_a_seeded_choice(tmp_path):
    root = mbeir_tree(tmp_path)
    prompts = {"Find the picture the edit describes.", "Retrieve the edited image."}
    first = load_split(root, "test", dataset="toy_task7")
    again = load_split(root, "test", dataset="toy_task7")
    chosen = [first.instruction_for(q) for q in first.queries]
    assert set(chosen) == prompts  # 8 queries draw both prompts
    assert chosen == [again.instruction_for(q) for q in again.queries]  # fixed at evaluation
    other = load_split(root, "test", dataset="toy_task7", instruction_seed=1)
    assert [other.instruction_for(q) for q in other.queries] != chosen
    bare = load_split(root, "test", dataset="toy_task7", instructions=False)
    assert all(bare.instruction_for(q) == "" for q in bare.queries)


def test_training_draws_an_instruction_per_epoch_without_moving_the_negatives(tmp_path):
    from urlkit.data.groups import TrainGroups

    split = load_split(mbeir_tree(tmp_path), "train", dataset="toy_task7")
    query = split.queries[0]
    assert query.instruction_choices == ("Find the picture the edit describes.", "Retrieve the edited image.")
    groups = TrainGroups(split, None, n_negatives=3, seed=0)
    drawn = []
    for epoch in range(8):
        groups.set_epoch(epoch)
        drawn.append(groups[0]["instruction"])
    assert set(drawn) == set(query.instruction_choices)  # redrawn per epoch, as UniIR trains
    assert query.instruction in query.instruction_choices  # evaluation keeps its one prompt
    plain = load_split(mbeir_tree(tmp_path / "plain"), "train", dataset="toy_task7", instructions=False)
    bare = TrainGroups(plain, None, n_negatives=3, seed=0)
    for epoch in range(3):
        groups.set_epoch(epoch)
        bare.set_epoch(epoch)
        assert groups[0]["doc_ids"] == bare[0]["doc_ids"] and "instruction" not in bare[0]


@pytest.mark.parametrize("task_id", [7, 4])
def test_category_follows_task_id(tmp_path, task_id):
    # the same image+text -> image queries; task 4 (image -> image) says I2I, and wins
    root = mbeir_tree(tmp_path, task_id=task_id)
    split = load_split(root, "test", dataset=f"toy_task{task_id}")
    assert split.category == TASK_CATEGORIES[task_id] == {7: "IT2I", 4: "I2I"}[task_id]


def test_qrels_file_gives_the_judgements(tmp_path):
    root = mbeir_tree(tmp_path)
    qrels = root / "qrels" / "test" / "mbeir_toy_task7_test_qrels.txt"
    qrels.write_text("7:300 0 7:1 1 7\n7:300 0 7:5 2 7\n", encoding="utf-8")
    split = load_split(root, "test", dataset="toy_task7")
    assert split.queries[0].qrels == {"7:1": 1, "7:5": 2}
    assert split.queries[1].qrels == {"7:2": 1}  # not in the qrels file: pos_cand_list
    qrels.write_text("7:300 0 7:1 1 7\n7:300 7:1\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 'qid 0 did grade") as err:
        load_split(root, "test", dataset="toy_task7")
    assert err.value.path == str(qrels) and err.value.line == 2


def test_a_second_judgement_of_a_pair_is_an_error_naming_file_and_line_as_in_beir(tmp_path):
    """A repeated (qid, did) line kept its last grade without a word; BEIR's reader refuses it.
    Now both do: an error naming the file and line, or with on_error=skip the first kept and
    the repeat counted."""
    root = mbeir_tree(tmp_path)
    qrels = root / "qrels" / "test" / "mbeir_toy_task7_test_qrels.txt"
    qrels.write_text("7:300 0 7:1 2 7\n7:300 0 7:5 1 7\n7:300 0 7:1 1 7\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"second judgement of \('7:300', '7:1'\), first on line 1") as err:
        load_split(root, "test", dataset="toy_task7")
    assert err.value.path == str(qrels) and err.value.line == 3
    split = load_split(root, "test", dataset="toy_task7", on_error="skip")
    assert split.queries[0].qrels == {"7:1": 2, "7:5": 1}  # the first judgement, not the last
    assert split.skipped == {"duplicate judgement": 1}


def test_a_missing_split_file_is_an_error_naming_the_paths(tmp_path):
    root = mbeir_tree(tmp_path)
    (root / "query" / "val" / "mbeir_toy_task7_val.jsonl").unlink()
    with pytest.raises(MissingSplitError, match="no val split of M-BEIR dataset 'toy_task7'") as err:
        load_split(root, "dev", dataset="toy_task7")
    assert str(root / "query" / "val" / "mbeir_toy_task7_val.jsonl") in str(err.value)
    assert err.value.reason == "missing split file"  # what lets a run go on without a dev split


def test_missing_pool_instructions_and_dataset_are_errors_naming_them(tmp_path):
    root = mbeir_tree(tmp_path)
    with pytest.raises(DataError, match=r"needs the dataset: data.dataset=.*available: toy_task7"):
        load_split(root, "test")
    tsv = root / "instructions" / "query_instructions.tsv"
    write_instructions(root, {("text", "image"): ["Find the picture."]})
    with pytest.raises(DataError, match=r"has no prompt for .*\('7', 'image,text', 'image'\)") as err:
        load_split(root, "test", dataset="toy_task7")
    assert str(tsv) in str(err.value) and err.value.line == 1
    tsv.unlink()
    with pytest.raises(DataError, match="instruction file not found") as err:
        load_split(root, "test", dataset="toy_task7")
    assert err.value.path == str(tsv)
    (root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl").unlink()
    with pytest.raises(DataError, match="no M-BEIR candidate pool found.*mbeir_toy_task7_cand_pool"):
        load_split(root, "test", dataset="toy_task7", instructions=False)


def test_a_query_file_is_read_for_its_own_split_only(tmp_path):
    """The old leak: one query file given as data.path served every split."""
    root = mbeir_tree(tmp_path / "M-BEIR")
    test_file = root / "query" / "test" / "mbeir_toy_task7_test.jsonl"
    assert _ids(load_split(test_file, "test"))[0] == "7:300"
    assert _ids(load_split(test_file, "train"))[0] == "7:100"  # read from the tree's train folder
    (root / "query" / "train" / "mbeir_toy_train.jsonl").unlink()
    with pytest.raises(DataError, match="no train split of M-BEIR dataset.*mbeir_toy_task7_train.jsonl and "
                       ".*query/train/mbeir_toy_train.jsonl"):  # fmt: skip
        load_split(test_file, "train")
    # a query file outside any M-BEIR tree is read for its own split, never for another
    alone = tmp_path / "alone"
    write_jsonl(alone / "cand_pool.jsonl", [{"did": "1:1", "txt": "a cat", "modality": "text"},
                                            {"did": "1:2", "txt": "a dog", "modality": "text"}])
    query_file = write_jsonl(alone / "mbeir_pets_task1_test.jsonl", [
        {"qid": "1:9", "query_txt": "cat", "query_modality": "text", "pos_cand_list": ["1:1"]}])
    assert _ids(load_split(query_file, "test", instructions=False)) == ["1:9"]
    with pytest.raises(DataError, match="holds the 'test' split, not 'train'") as err:
        load_split(query_file, "train", instructions=False)
    assert err.value.path == str(query_file.resolve())


def test_the_toy_query_file_keeps_working(tmp_path):
    query_file = mbeir_root(tmp_path)
    split = load_split(query_file, "test")
    assert split.category == "IT2I"  # task_id 7
    assert split.instruction_for(split.queries[0]) in {"Find the picture the edit describes.",
                                                       "Retrieve the edited image."}
    assert split.instruction_for(split.queries[1]) == "Find the picture of the caption."  # a text query


def test_per_split_pools_and_the_union_files(tmp_path):
    """M-BEIR names some pools per split (MSCOCO) and pools the union files globally."""
    root = mbeir_tree(tmp_path)
    local = root / "cand_pool" / "local"
    lines = (local / "mbeir_toy_task7_cand_pool.jsonl").read_text().splitlines()
    write_jsonl(local / "mbeir_toy_task7_test_cand_pool.jsonl",  # the test split's own pool wins
                [{**json.loads(line), "txt": "from the test pool"} for line in lines])
    assert load_split(root, "test", dataset="toy_task7").corpus["7:0"].text == "from the test pool"
    train = (root / "query" / "train" / "mbeir_toy_train.jsonl").read_text()
    (root / "query" / "union_train").mkdir()
    (root / "query" / "union_train" / "mbeir_union_up_train.jsonl").write_text(train)
    union = load_split(root, "train", dataset="union_up", instructions=False)
    assert union.name == "union_up" and len(union.queries) == 10 and union.category == "IT2I"
    assert union.source.endswith("query/union_train/mbeir_union_up_train.jsonl")
    assert set(union.corpus) == {f"7:{1000 + i}" for i in range(8)} | {"9:0", "9:1"}  # the whole union pool
    (root / "query" / "union_val").mkdir()  # M-BEIR's union val file has no "_up"
    val = (root / "query" / "val" / "mbeir_toy_task7_val.jsonl").read_text()
    (root / "query" / "union_val" / "mbeir_union_val.jsonl").write_text(val)
    with pytest.raises(DataError, match="mbeir_union_val_cand_pool.jsonl"):
        load_split(root, "dev", dataset="union_up")
    (local / "mbeir_toy_task7_cand_pool.jsonl").rename(root / "cand_pool" / "global" / "mbeir_union_val_cand_pool.jsonl")
    assert load_split(root, "dev", dataset="union_up").source.endswith("query/union_val/mbeir_union_val.jsonl")
    with pytest.raises(MissingSplitError, match="no union test queries: UniIR tests each dataset's own test split"):
        load_split(root, "test", dataset="union_up")


def test_training_reads_the_union_training_pool_not_the_local_evaluation_pool(tmp_path):
    """The local pool holds val and test's candidates: training negatives drawn from it would
    put test documents into training. Training reads its dataset's part of the union pool, and
    only a tree without one falls to the local pool, with a warning in the split's report."""
    root = mbeir_tree(tmp_path)
    train = load_split(root, "train", dataset="toy_task7")
    test = load_split(root, "test", dataset="toy_task7")
    assert set(train.corpus) == {f"7:{1000 + i}" for i in range(8)}  # dataset 9's candidates left out
    assert not set(train.corpus) & set(test.corpus)
    assert f"candidates from {root / 'cand_pool/global/mbeir_union_train_cand_pool.jsonl'} (dataset ids 7 only)" \
        in train.report()  # not dataset 9, which only the task-3 lines name
    assert "warning" not in train.report()
    own = write_jsonl(tmp_path / "elsewhere" / "train_pool.jsonl", [
        {"did": f"7:{1000 + i}", "txt": f"caption {i}", "modality": "text"} for i in range(8)])
    assert load_split(root, "train", dataset="toy_task7", instructions=False, pool=own).corpus["7:1000"].text == "caption 0"
    global_pool = root / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl"
    global_pool.unlink()  # a tree without the union's training pool: the task's, said loudly
    path = root / "query" / "train" / "mbeir_toy_train.jsonl"
    local_ids = [{**q, **{key: [d.replace(":100", ":") for d in q[key]] for key in ("pos_cand_list", "neg_cand_list")}}
                 for q in map(json.loads, path.read_text().splitlines())]  # 7:1003 -> 7:3, the local pool's
    write_jsonl(path, local_ids)
    local = load_split(root, "train", dataset="toy_task7")
    assert set(local.corpus) == set(test.corpus)
    assert "warning: val and test read this pool too, so random training negatives can be their candidates" \
        in local.report()
    (root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl").unlink()
    with pytest.raises(DataError, match="no M-BEIR candidate pool found for the train split.*data.pool.train=") as err:
        load_split(root, "train", dataset="toy_task7")
    assert str(global_pool) in str(err.value)


def test_other_datasets_ids_outside_the_pool_are_left_out_and_counted(tmp_path):
    """OVEN's queries list InfoSeek positives that OVEN's local pool does not hold (UniIR
    evaluates without them); a missing candidate of the query's own dataset stays an error."""
    root = mbeir_tree(tmp_path)
    path = root / "query" / "test" / "mbeir_toy_task7_test.jsonl"
    queries = [json.loads(line) for line in path.read_text().splitlines()]
    queries[0]["pos_cand_list"].append("6:42")
    queries[1]["neg_cand_list"].append("6:43")
    write_jsonl(path, queries)
    (root / "qrels" / "test" / "mbeir_toy_task7_test_qrels.txt").unlink()
    split = load_split(root, "test", dataset="toy_task7")
    assert split.queries[0].qrels == {"7:1": 1} and split.queries[1].negatives == ["7:1"]
    assert "2 ids of other datasets' candidates not in the pool left out" in split.report()
    queries[0]["pos_cand_list"].append("7:77")
    write_jsonl(path, queries)
    with pytest.raises(DataError, match=r"unknown doc ids \['7:77'\]"):
        load_split(root, "test", dataset="toy_task7")


def test_repeated_training_queries_are_kept_as_upsampled_repeats(tmp_path):
    """mbeir_union_up_train.jsonl repeats queries (UniIR upsamples with repeats); val/test may not."""
    root = mbeir_tree(tmp_path)
    path = root / "query" / "train" / "mbeir_toy_train.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines(keepends=True)[0])
    train = load_split(root, "train", dataset="toy_task7")
    assert [q.id for q in train.queries].count("7:100") == 2 and len(train.queries) == 9
    assert "1 repeated training queries kept as repeats" in train.report()
    test = root / "query" / "test" / "mbeir_toy_task7_test.jsonl"
    test.write_text(test.read_text() + test.read_text().splitlines(keepends=True)[0])
    with pytest.raises(DataError, match="duplicate query id '7:300'") as err:
        load_split(root, "test", dataset="toy_task7")
    assert err.value.line == 9


def test_an_instruction_header_that_names_its_columns_is_read_by_name(tmp_path):
    root = mbeir_tree(tmp_path)
    tsv = root / "instructions" / "query_instructions.tsv"
    tsv.write_text("dataset_id\tprompt_1\tquery_modality\tnotes\tcand_modality\tprompt_2\n"
                   "7\tRetrieve the edited image.\timage,text\tinternal: checked\timage\t\n", encoding="utf-8")
    split = load_split(root, "test", dataset="toy_task7")
    assert {split.instruction_for(q) for q in split.queries} == {"Retrieve the edited image."}  # not the note
