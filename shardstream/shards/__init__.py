"""The on-disk format: shard names and keys, the manifest, tar and Parquet shards, verification.

Nothing here imports a framework.  Modules: :mod:`.names` (formats, file names, sample keys, the
one file-name rule), :mod:`.manifest` (``manifest.json``), :mod:`.imagecodec` (npy / PNG
payloads), :mod:`.tarshard` and :mod:`.parquetshard` (the containers), :mod:`.formats` (the one
entry point for writing and reading a shard), :mod:`.verify` (a split against its manifest).
"""

from .formats import decode_payloads, read_payloads, read_shard, write_shard
from .manifest import Manifest, ShardInfo, load_manifest
from .names import (
    ENCODINGS,
    FORMATS,
    MANIFEST_NAME,
    is_plain_name,
    key_digits,
    sample_key,
    shard_name,
)
from .splits import find_splits
from .verify import verify

__all__ = ["Manifest", "ShardInfo", "load_manifest", "find_splits", "FORMATS", "ENCODINGS",
           "MANIFEST_NAME", "shard_name", "sample_key", "key_digits", "is_plain_name",
           "write_shard", "read_shard", "read_payloads", "decode_payloads", "verify"]
