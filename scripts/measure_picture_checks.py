"""What checking a dataset's pictures costs at load time (docs/data.md, "Pictures at scale").

    python scripts/measure_picture_checks.py [--pictures 3000] [--latency-ms 0 2] [--repeats 3]

Writes ``--pictures`` small PNGs (32 x 32, about 100 bytes each) and a urlkit JSONL folder
naming one per document into a temporary folder, then times ``load_split`` (the best of
``--repeats``, the page cache warm, urlkit's own per-process check cache emptied each time):
with no pictures at all (the cost of the lines alone), ``check_pictures=exists`` and
``verify``, on 1 thread and on ``urlkit.data.picture_checks.THREADS``. ``--latency-ms`` adds a
simulated wait to every open of a picture (a ``time.sleep`` before Python's ``open``: it
releases the GIL as a network file system's blocking read does; ``stat`` is not slowed), so it
models a server's latency, not its throughput. Prints one row per setting: seconds and
microseconds per picture over the text-only load, wall-clock and CPU (all threads).
"""

from __future__ import annotations

import argparse
import builtins
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from urlkit.data import images, load_split, picture_checks


def write_dataset(root: Path, n: int, with_pictures: bool) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for i in range(n):
            line = {"id": f"d{i}", "text": f"document {i}"}
            if with_pictures:
                path = root / "images" / f"d{i}.png"
                if not path.exists():
                    Image.new("RGB", (32, 32), (i % 256, (7 * i) % 256, 90)).save(path)
                line["image"] = f"images/d{i}.png"
            corpus.write(json.dumps(line) + "\n")
    with open(root / "train.jsonl", "w", encoding="utf-8") as train:
        for i in range(0, n, 10):
            train.write(json.dumps({"id": f"q{i}", "text": f"query {i}", "positives": [f"d{i}"]}) + "\n")
    return root


def best_time(root: Path, repeats: int, **options) -> tuple[float, float]:
    """The best wall-clock and process CPU seconds (all threads) of ``repeats`` loads."""
    times = []
    for _ in range(repeats):
        images._CHECKED.clear()
        start, cpu = time.perf_counter(), time.process_time()
        load_split(root, "train", **options)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return min(t[0] for t in times), min(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.pictures
    with tempfile.TemporaryDirectory() as folder:
        text_only = write_dataset(Path(folder) / "text", n, with_pictures=False)
        pictures = write_dataset(Path(folder) / "pictures", n, with_pictures=True)
        base, base_cpu = best_time(text_only, args.repeats)
        print(f"{n} documents without pictures: {base:.3f} s ({base_cpu:.3f} s CPU)")
        real_open, default_threads = builtins.open, picture_checks.THREADS
        for latency in args.latency_ms:
            def slow_open(file, *a, latency=latency, **kw):
                if latency and str(file).startswith(str(pictures / "images")):
                    time.sleep(latency / 1000)
                return real_open(file, *a, **kw)

            builtins.open = slow_open
            try:
                for mode in ("exists", "verify"):
                    for threads in (1, default_threads):
                        picture_checks.THREADS = threads
                        seconds, cpu = best_time(pictures, args.repeats, check_pictures=mode)
                        print(f"latency {latency:g} ms  {mode:6s}  {threads:2d} threads: {seconds:.3f} s, "
                              f"{(seconds - base) / n * 1e6:.0f} us per picture ({(cpu - base_cpu) / n * 1e6:.0f} us CPU)")
            finally:
                builtins.open = real_open
                picture_checks.THREADS = default_threads


if __name__ == "__main__":
    main()
