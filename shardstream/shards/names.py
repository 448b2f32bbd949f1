"""Names on disk: shard formats and encodings, shard file names, sample keys.

Pure functions; nothing here reads or writes a file.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InputError

FORMATS = ("tar", "parquet")
ENCODINGS = ("npy", "png")
#: the file-name extension of each shard format (the order is the order in manifest.json)
SHARD_EXTENSIONS = {"tar": ".tar", "parquet": ".parquet"}
MANIFEST_NAME = "manifest.json"


def shard_name(split: str, index: int, fmt: str) -> str:
    """File name of shard ``index`` of ``split``: ``shard_name("train", 3, "tar")`` is
    ``"train-000003.tar"``."""
    check_format(fmt)
    return f"{split}-{int(index):06d}{SHARD_EXTENSIONS[fmt]}"


def sample_key(global_id: int) -> str:
    """The key of a sample in its shard: the global sample index, zero-padded to 9 digits
    (``sample_key(42)`` is ``"000000042"``); dot-free, as webdataset requires."""
    return f"{int(global_id):09d}"


def key_digits(first_id: int, n: int) -> np.ndarray:
    """uint8 (n, width): the ASCII bytes of the keys of samples ``first_id .. first_id+n-1``
    (all of one width, see :func:`sample_key`) — the vectorised form of :func:`sample_key`.
    InputError when the keys of that range differ in width (ids crossing 10**9)."""
    width = len(sample_key(first_id + max(n - 1, 0)))
    if width != len(sample_key(first_id)):
        raise InputError(f"the keys of samples {first_id}..{first_id + n - 1} differ in width")
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    pow10 = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((ids[:, None] // pow10) % 10 + 48).astype(np.uint8)


def check_format(fmt):
    if fmt not in FORMATS:
        raise InputError(f"unknown shard format {fmt!r}; use one of {', '.join(FORMATS)}")


# a plain file name: no path separators, no control characters, not hidden, at most 255 chars
_PLAIN_NAME = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{0,254}\Z")
#: names ending so are files being written (temp files), never finished data
TEMP_SUFFIXES = (".tmp", ".part", "~")


def is_plain_name(name) -> bool:
    """True for a name that may stand for a dataset, split, shard or manifest: a string of at
    most 255 characters with no path separator, no control character, no ``..``, not starting
    with ``.`` (hidden) and not ending like a temp file (:data:`TEMP_SUFFIXES`).  The converter
    (dataset and split names), the manifest (shard names) and the server (every path segment
    and listed entry) share this one rule."""
    return (isinstance(name, str) and bool(_PLAIN_NAME.match(name)) and ".." not in name
            and not name.endswith(TEMP_SUFFIXES))
