"""Shard formats: names, keys, and the one entry point for writing and reading a shard.

``write_shard`` / ``read_shard`` dispatch on the format (``"tar"`` → :mod:`.tarshard`,
``"parquet"`` → :mod:`.parquetshard`); the image encoding (``"npy"``: raw uint8, ``"png"``) is
handled here, the same for both containers.  Reading is split in two steps so that they can be
timed apart: :func:`read_payloads` parses the container (validating names, order, counts) and
:func:`decode_payloads` turns the image payloads into a uint8 array (PNG decoding; nothing to do
for npy).  No framework is imported here.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InputError, ShardError

FORMATS = ("tar", "parquet")
ENCODINGS = ("npy", "png")
_EXT = {"tar": ".tar", "parquet": ".parquet"}
# fixed PNG settings: the same pixels always give the same bytes
PNG_COMPRESS_LEVEL = 6


def shard_name(split: str, index: int, fmt: str) -> str:
    """File name of shard ``index`` of ``split``: ``shard_name("train", 3, "tar")`` is
    ``"train-000003.tar"``."""
    _check_format(fmt)
    return f"{split}-{int(index):06d}{_EXT[fmt]}"


def sample_key(global_id: int) -> str:
    """The key of a sample in its shard: the global sample index, zero-padded to 9 digits
    (``sample_key(42)`` is ``"000000042"``); dot-free, as webdataset requires."""
    return "%09d" % int(global_id)


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


def _check_format(fmt):
    if fmt not in FORMATS:
        raise InputError(f"unknown shard format {fmt!r}; use one of {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# image encodings


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one uint8 (H, W, C) image, C = 1 (mode L) or 3 (RGB); deterministic
    (fixed compression level, no metadata chunks)."""
    from PIL import Image

    if image.shape[2] == 1:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0]), mode="L")
    elif image.shape[2] == 3:
        pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    else:
        raise InputError(f"png encoding needs 1 or 3 channels, the images have {image.shape[2]}; "
                         f"use encoding='npy'")
    out = io.BytesIO()
    pil.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return out.getvalue()


def npy_header(shape) -> bytes:
    """The bytes ``numpy.save`` writes before the data of a C-order uint8 array of ``shape``
    (format 1.0)."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": "|u1", "fortran_order": False, "shape": tuple(int(d) for d in shape)})
    return out.getvalue()


def encode_npy(images: np.ndarray):
    """Iterator over the ``.npy`` bytes of each uint8 (H, W, C) image of ``images`` (n, H, W, C):
    exactly what ``numpy.save(f, image, allow_pickle=False)`` writes."""
    head = npy_header(images.shape[1:])
    for image in images:
        yield head + np.ascontiguousarray(image).tobytes()


def decode_pngs(payloads, shape, shard: str, first_id: int) -> np.ndarray:
    """uint8 (n, H, W, C) from n PNG payloads (bytes-like), each checked to be an (H, W) image of
    the mode matching C (L for 1, RGB for 3); :class:`ShardError` naming the shard and sample."""
    from PIL import Image

    h, w, c = shape
    mode = {1: "L", 3: "RGB"}.get(c)
    out = np.empty((len(payloads), h, w, c), dtype=np.uint8)
    for i, payload in enumerate(payloads):
        try:
            with Image.open(io.BytesIO(payload), formats=("PNG",)) as im:
                if im.size != (w, h) or im.mode != mode:
                    raise ShardError(f"{shard}: sample {sample_key(first_id + i)} is a {im.mode} "
                                     f"image of {im.size[1]}x{im.size[0]}, expected {mode} "
                                     f"{h}x{w}; re-create the shard")
                out[i] = np.asarray(im).reshape(h, w, c)
        except ShardError:
            raise
        except Exception as exc:  # PIL raises many kinds (OSError, SyntaxError, ValueError ...)
            raise ShardError(f"{shard}: sample {sample_key(first_id + i)} is not a readable PNG "
                             f"({type(exc).__name__}: {exc}); the shard is damaged: re-create or "
                             f"re-download it") from None
    return out


# ---------------------------------------------------------------------------------------------
# writing


def write_shard(fmt: str, fileobj, first_id: int, images: np.ndarray, labels, encoding: str,
                classes) -> None:
    """Write one shard of format ``fmt`` to the binary file object ``fileobj``.

    ``images``: uint8 (n, H, W, C); ``labels``: int (n,) in ``[0, len(classes))``; the samples
    get the global ids ``first_id .. first_id+n-1`` (keys :func:`sample_key`).  ``encoding``:
    ``"npy"`` or ``"png"``.  The same arguments always give the same bytes.
    """
    _check_format(fmt)
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
        from .tarshard import write_tar

        keys = [sample_key(first_id + i) for i in range(n)]
        payloads = encode_npy(images) if encoding == "npy" else (encode_png(im) for im in images)
        write_tar(fileobj, keys, labels.tolist(), payloads, encoding)
    else:
        from .parquetshard import write_parquet

        payloads = images if encoding == "npy" else [encode_png(im) for im in images]
        write_parquet(fileobj, first_id, payloads, labels, encoding, images.shape[1:],
                      tuple(classes))


# ---------------------------------------------------------------------------------------------
# reading


def _shard_args(fmt, manifest, shard_index):
    _check_format(fmt)
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
    ``[0, len(manifest.classes))``; payloads uint8 (n, H, W, C) for npy, or a sequence of n PNG
    byte strings for png (see :func:`decode_payloads`).  Validates member names / keys, order,
    count (n = the manifest's count) and sizes; :class:`ShardError` naming the shard.
    """
    name, first_id, n = _shard_args(fmt, manifest, shard_index)
    shape = tuple(manifest.image_shape)
    if fmt == "tar":
        from .tarshard import read_tar

        payloads, labels = read_tar(data, name, first_id, n, shape, manifest.encoding)
    else:
        from .parquetshard import read_parquet

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
