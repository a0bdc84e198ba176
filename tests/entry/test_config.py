"""urlkit.config's reading of command-line overrides, against Hydra's own parser."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from urlkit.config import override_key, sets_data

# every form Hydra's override grammar (hydra/grammar/OverrideParser.g4) writes a key in
FORMS = [
    "data.test_split=dev",
    "+data.on_error=skip",
    "++model.dtype=bfloat16",
    "~data.pool",
    "~data.pool=null",
    "data@eval=beir",  # a config group placed in another package
    "hydra/launcher=basic",  # a group path
    "data.run_file='a=b.trec'",  # a quoted value holding "="
    "train.grad_clip=",  # an empty value
    "+experiment=table1",
]


@pytest.mark.parametrize("override", FORMS)
def test_override_key_is_the_key_hydra_parses(override):
    parsed = OverridesParser.create().parse_override(override)
    hydra_key = parsed.key_or_group + (f"@{parsed.package}" if parsed.package is not None else "")
    assert override_key(override) == hydra_key


def test_override_key_reads_the_forms_urlkit_asks_about():
    assert override_key("++model.dtype=bfloat16") == "model.dtype"
    assert override_key("~data.pool") == "data.pool"
    assert override_key("data@eval=beir") == "data@eval"
    assert override_key("data.run_file=a=b.trec") == "data.run_file"
    assert sets_data(["++data.path=/x"]) and sets_data(["~data.mixture.a"]) and not sets_data(["data.test_split=dev"])
