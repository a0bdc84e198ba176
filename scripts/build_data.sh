#!/usr/bin/env bash
# Rebuild the embedded benchmarks (data/wordsense, data/manpages, data/emoji) from Debian packages.
#   bash scripts/build_data.sh            # install the packages (needs root), build both
#   bash scripts/build_data.sh --report   # also print split sizes and BM25's scores
# Same package versions -> byte-identical corpus/split files (see data/README.md); set
# SOURCE_DATE_EPOCH to pin the build date recorded in dataset.json as well.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(wordnet-base manpages manpages-dev mandoc)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed$" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  # --no-install-recommends: wordnet-base alone holds the database; no GUI, no dictd.
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi

python -m urlkit.datasets.wordsense --out data/wordsense "$@"
python -m urlkit.datasets.manpages --out data/manpages "$@"

# The image-text task (T->I and I->T): Noto Color Emoji rendered with Pillow, Unicode groups.
for p in fonts-noto-color-emoji unicode-data; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q " installed$" || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"; $sudo apt-get install -y --no-install-recommends "$p"; }
done
python -m urlkit.datasets.emoji --out data/emoji
