"""The Debian packages a benchmark is built from: their versions and the files they own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from urlkit.datasets.build import DatasetBuildError

INSTALL_HINT = "install it with `apt-get install -y {names}` (or run scripts/build_data.sh)"


def package_versions(names: list[str]) -> dict[str, str]:
    """``{package: version}`` from ``dpkg-query -W``; an error naming what is not installed."""
    versions = {}
    for name in names:
        output = _dpkg(["dpkg-query", "-W", "-f=${Status}\t${Version}", name], names)
        status, _, version = output.partition("\t")
        if not status.endswith(" installed") or not version:
            raise DatasetBuildError(
                f"the Debian package {name!r} is not installed; "
                + INSTALL_HINT.format(names=" ".join(names))
            )
        versions[name] = version
    return versions


def package_files(names: list[str]) -> list[Path]:
    """Every path the packages own (``dpkg -L``), sorted, as listed (links not resolved)."""
    package_versions(names)  # fails clearly when one is missing
    paths = set()
    for name in names:
        for line in _dpkg(["dpkg", "-L", name], names).splitlines():
            if line.startswith("/"):
                paths.add(Path(line))
    return sorted(paths)


def _dpkg(command: list[str], names: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise DatasetBuildError(
            f"`{command[0]}` not found: the builders read Debian packages ({', '.join(names)}) "
            "and need a Debian or Ubuntu system"
        )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DatasetBuildError(
            f"`{' '.join(command)}` failed ({result.stderr.strip() or result.returncode}); "
            + INSTALL_HINT.format(names=" ".join(names))
        )
    return result.stdout
