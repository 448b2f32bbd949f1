"""The manifest's columnar index: ``<location>/index.npy``, beside ``manifest.json``.

``manifest.json`` stays the human-readable source; with 100,000 shards it is ~40 MB of JSON
whose parsing into per-shard objects takes seconds and hundreds of MB in every process.  The
index holds the same content in two ``.npy`` arrays written one after the other (read them
with two successive ``numpy.load`` calls on one open file, ``allow_pickle=False``):

1. the shard table, a structured array with one row per shard and format (formats in the
   manifest's order, shards in order): ``format`` u1 (index into ``FORMATS``), ``name``
   ``S<w>`` (UTF-8), ``num_samples`` <i8, ``bytes`` <i8, ``sha256`` u1 (32,) (the raw digest);
2. the metadata, uint8 bytes of a JSON object: ``index_version``, ``manifest_sha256`` (the
   sha256 of the exact ``manifest.json`` bytes it was written with) and every manifest field
   except ``shards``.

A reader trusts the index only when ``manifest_sha256`` equals the sha256 of the
``manifest.json`` it read, so the two can never silently disagree (a mismatch is a
:class:`~shardstream.errors.ManifestError` naming both files); ``shardstream verify`` compares
them field by field.  The bytes are deterministic (no timestamps), like the manifest's.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from ..errors import ManifestError

INDEX_NAME = "index.npy"
INDEX_VERSION = 1
#: shard formats by their code in the table's ``format`` column
FORMATS = ("tar", "parquet")


def table_dtype(name_width: int) -> np.dtype:
    """The shard table's row type for names of up to ``name_width`` UTF-8 bytes."""
    return np.dtype([("format", "u1"), ("name", f"S{max(int(name_width), 1)}"),
                     ("num_samples", "<i8"), ("bytes", "<i8"), ("sha256", "u1", (32,))])


def index_bytes(manifest, manifest_json: bytes) -> bytes:
    """The index file of ``manifest`` (a :class:`~shardstream.shards.manifest.Manifest`) whose
    ``manifest.json`` is exactly ``manifest_json``."""
    rows = [(FORMATS.index(fmt), s.name.encode("utf-8"), s.num_samples, s.bytes,
             np.frombuffer(bytes.fromhex(s.sha256), np.uint8))
            for fmt in manifest.formats for s in manifest.shards[fmt]]
    width = max((len(r[1]) for r in rows), default=1)
    table = np.array(rows, dtype=table_dtype(width))
    meta = {k: v for k, v in manifest.to_dict().items() if k != "shards"}
    meta = {"index_version": INDEX_VERSION,
            "manifest_sha256": manifest_digest(manifest_json), **meta}
    text = json.dumps(meta, indent=None, sort_keys=True, ensure_ascii=True).encode()
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    np.save(buf, np.frombuffer(text, np.uint8), allow_pickle=False)
    return buf.getvalue()


def parse_index(data: bytes, where: str) -> tuple[dict, np.ndarray]:
    """``(metadata dict, shard table)`` of the index bytes ``data`` (``where`` names the file in
    errors); checks the file's structure, not its agreement with a manifest."""
    fix = f"delete {where} (readers then use manifest.json) or re-run `shardstream convert`"
    try:
        f = io.BytesIO(data)
        table = np.load(f, allow_pickle=False)
        meta = json.loads(np.load(f, allow_pickle=False).tobytes().decode("utf-8"))
    except Exception as exc:  # numpy raises ValueError/EOFError/..., json ValueError
        raise ManifestError(f"index {where} is damaged or not a shardstream index ({exc}); "
                            f"{fix}") from None
    names = table.dtype.names or ()
    expected = table_dtype(1).names
    if (table.ndim != 1 or names != expected or table.dtype["sha256"].shape != (32,)
            or not isinstance(meta, dict)):
        raise ManifestError(f"index {where} does not hold a shard table with columns "
                            f"{', '.join(expected)}; {fix}")
    if meta.get("index_version") != INDEX_VERSION:
        raise ManifestError(f"index {where}: unknown index_version "
                            f"{meta.get('index_version')!r} (this shardstream reads "
                            f"{INDEX_VERSION}); {fix}")
    return meta, table


def manifest_digest(manifest_json: bytes) -> str:
    """The sha256 (hex) an index records for ``manifest.json``'s bytes."""
    return hashlib.sha256(manifest_json).hexdigest()
