"""What a W&B ``.wandb`` file holds, read offline (no network, no account): its records, and
the config they log."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of 7-byte-headed records
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """The complete records of a ``.wandb`` file (a torn last record is left out)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0)
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # block trailer: zero padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0 or len(payload) < length:
            break
        if kind in (FULL, FIRST):
            pending = payload
        elif kind in (MIDDLE, LAST):
            pending += payload
        if kind in (FULL, LAST):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def logged_config(path: Path) -> dict:
    """The config keys a ``.wandb`` file logs (its run record's, then its config updates), with
    the values as W&B stores them (JSON)."""
    config = {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config
