"""Read the history rows of a wandb offline run file (``run-<id>.wandb``) without a network or wandb's service.

The file is wandb's record log, the LevelDB log layout: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of records, each a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle,
4 last) and a slice of one serialised ``wandb_internal_pb2.Record``; a block's tail shorter than a header is zeros.
"""

from __future__ import annotations

import json
import struct

BLOCK = 32768
HEADER = 7
FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)


def _payloads(data: bytes):
    if not data.startswith(FILE_HEADER):
        raise ValueError(f"not a wandb run file (header {data[:7]!r})")
    pos, pending = len(FILE_HEADER), b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero fill at the end of a block
            pos += left_in_block
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def history_rows(path: str) -> list[dict]:
    """Every ``wandb.log`` row of the run: {key: value} with ``_step``."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    with open(path, "rb") as fh:
        data = fh.read()
    for payload in _payloads(data):
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
