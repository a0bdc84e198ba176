"""Builders of the embedded benchmarks, from real text that ships in Debian packages.

* :mod:`urlkit.datasets.wordsense` -- WordNet 3.0 (``wordnet-base``): a sentence and a word
  -> the definition of the word's sense, ranked within all senses of the word.
* :mod:`urlkit.datasets.manpages` -- the Linux man-pages (``manpages``, ``manpages-dev``):
  a one-line description -> the manual page, ranked over all pages.

Each builder returns a :class:`~urlkit.datasets.build.BuiltDataset` and writes it with
:func:`~urlkit.datasets.build.write_dataset` in the urlkit JSONL folder format that
``urlkit.data.loaders.load_split`` reads; both run as ``python -m urlkit.datasets.<name>
--out data/<name> [--report]`` (``scripts/build_data.sh`` does both). The committed results
live in ``data/`` (provenance, licences and sizes: ``data/README.md``).
"""

from urlkit.datasets.build import BuiltDataset, DatasetBuildError, write_dataset

__all__ = ["BuiltDataset", "DatasetBuildError", "write_dataset"]
