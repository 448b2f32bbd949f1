"""Shard formats: the one entry point for writing and reading a shard.

``write_shard`` / ``read_shard`` dispatch on the format (``"tar"`` → :mod:`.tarshard`,
``"parquet"`` → :mod:`.parquetshard`); the image encoding (``"npy"``: raw uint8, ``"png"``) is
handled here, the same for both containers.  Reading is split in two steps so that they can be
timed apart: :func:`read_payloads` parses the container (validating names, order, counts) and
:func:`decode_payloads` turns the image payloads into a uint8 array (PNG decoding; nothing to do
for npy).  No framework is imported here.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, ShardError
from .imagecodec import decode_pngs, encode_npy, encode_png
from .names import ENCODINGS, check_format, sample_key
from .parquetshard import read_parquet, write_parquet
from .tarshard import read_tar, write_tar

# ---------------------------------------------------------------------------------------------
# writing


def write_shard(fmt: str, fileobj, first_id: int, images: np.ndarray, labels, encoding: str,
                classes) -> None:
    """Write one shard of format ``fmt`` to the binary file object ``fileobj``.

    ``images``: uint8 (n, H, W, C); ``labels``: int (n,) in ``[0, len(classes))``; the samples
    get the global ids ``first_id .. first_id+n-1`` (keys :func:`sample_key`).  ``encoding``:
    ``"npy"`` or ``"png"``.  The same arguments always give the same bytes.
    """
    check_format(fmt)
    if encoding not in ENCODINGS:
        raise InputError(f"unknown encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise InputError(f"images must be uint8 (n, H, W, C), got {images.dtype} "
                         f"{images.shape}")
    n = len(images)
    if labels.shape != (n,) or (n and labels.dtype.kind not in "iu"):
        raise InputError(f"labels must be integers of shape ({n},), got {labels.dtype} "
                         f"{labels.shape}")
    if n == 0:
        raise InputError("a shard needs at least one sample")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise InputError(f"labels must lie in [0, {len(classes)}) for {len(classes)} classes, "
                         f"got {labels.min()}..{labels.max()}")
    if int(first_id) < 0:
        raise InputError(f"first_id must be >= 0, got {first_id}")
    labels = labels.astype(np.int64)
    if fmt == "tar":
        keys = [sample_key(first_id + i) for i in range(n)]
        payloads = encode_npy(images) if encoding == "npy" else (encode_png(im) for im in images)
        write_tar(fileobj, keys, labels.tolist(), payloads, encoding)
    else:
        payloads = images if encoding == "npy" else [encode_png(im) for im in images]
        write_parquet(fileobj, first_id, payloads, labels, encoding, images.shape[1:],
                      tuple(classes))


# ---------------------------------------------------------------------------------------------
# reading


def _shard_args(fmt, manifest, shard_index):
    check_format(fmt)
    if fmt not in manifest.shards:
        raise InputError(f"the manifest of {manifest.dataset}/{manifest.split} lists no {fmt} "
                         f"shards (it has {', '.join(manifest.formats)})")
    infos = manifest.shards[fmt]
    if not 0 <= int(shard_index) < len(infos):
        raise InputError(f"shard index {shard_index} out of range: {manifest.dataset}/"
                         f"{manifest.split} has {len(infos)} {fmt} shards")
    info = infos[int(shard_index)]
    return info.name, int(manifest.offsets[shard_index]), info.num_samples


def read_payloads(fmt: str, data, manifest, shard_index: int):
    """Parse shard ``shard_index`` of format ``fmt`` from its bytes ``data``.

    Returns ``(payloads, labels)``: labels int64 (n,), checked to lie in
    ``[0, len(manifest.classes))``; payloads uint8 (n, H, W, C) for npy, or a
    :class:`.spans.Spans` of the n PNG byte strings for png (see :func:`decode_payloads`).
    Validates member names / keys, order, count (n = the manifest's count) and sizes;
    :class:`ShardError` naming the shard.
    """
    name, first_id, n = _shard_args(fmt, manifest, shard_index)
    shape = tuple(manifest.image_shape)
    if fmt == "tar":
        payloads, labels = read_tar(data, name, first_id, n, shape, manifest.encoding)
    else:
        payloads, labels = read_parquet(data, name, first_id, n, shape, manifest.encoding)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(manifest.classes)):
        bad = int(np.flatnonzero((labels < 0) | (labels >= len(manifest.classes)))[0])
        raise ShardError(f"{name}: sample {sample_key(first_id + bad)} has label {labels[bad]}, "
                         f"outside the {len(manifest.classes)} classes of the manifest; the shard "
                         f"does not belong to this manifest: re-run the conversion")
    return payloads, labels


def decode_payloads(payloads, manifest, shard_index: int) -> np.ndarray:
    """uint8 (n, H, W, C) images from the payloads :func:`read_payloads` returned for shard
    ``shard_index`` (PNG decoding; npy payloads are returned as they are)."""
    if isinstance(payloads, np.ndarray):
        return payloads
    fmt = manifest.formats[0]
    name, first_id, _ = _shard_args(fmt, manifest, shard_index)
    name = name.rsplit(".", 1)[0]
    return decode_pngs(payloads, tuple(manifest.image_shape), name, first_id)


def read_shard(fmt: str, data, manifest, shard_index: int):
    """Shard ``shard_index`` of format ``fmt`` from its bytes: ``(images uint8 (n, H, W, C),
    labels int64 (n,))`` with n the manifest's count; :class:`ShardError` naming the shard when
    its content does not match the manifest (names, order, count, shapes, labels, PNG data)."""
    payloads, labels = read_payloads(fmt, data, manifest, shard_index)
    if isinstance(payloads, np.ndarray):
        return payloads, labels
    name, first_id, _ = _shard_args(fmt, manifest, shard_index)
    return decode_pngs(payloads, tuple(manifest.image_shape), name, first_id), labels
