"""The marker file of a synthetic stand-in (``shardstream synth``): written next to the raw
files, it holds the generator's parameters; ``shardstream convert`` sees it and records
``source.synthetic = true`` (and the parameters) in every manifest made from those files."""

from __future__ import annotations

import json
import os

from .. import storage
from ..errors import InputError

MARKER = "shardstream-synthetic.json"
GENERATOR = "shardstream.synth"
GENERATOR_VERSION = 1


def write_marker(out_dir, dataset: str, seed: int, counts: dict) -> None:
    """Write :data:`MARKER` into the local folder ``out_dir`` (atomically; call it last)."""
    marker = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION,
              "dataset": dataset, "seed": int(seed), "num_train": counts["train"],
              "num_test": counts["test"],
              "note": "synthetic stand-in written by `shardstream synth`; not the real data"}
    storage.write_bytes(os.path.join(os.fspath(out_dir), MARKER),
                        (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())


def read_marker(folder) -> dict | None:
    """The generator parameters of the synthetic stand-in in the local ``folder`` (its
    :data:`MARKER`), or None when the folder holds no marker (real data)."""
    path = os.path.join(os.fspath(folder), MARKER)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable synthetic-data marker ({exc}); delete it and "
                         f"re-run `shardstream synth`") from None
    return data
