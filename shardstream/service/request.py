"""What a batch request may ask for, checked before any work: :func:`parse_request`.

A request names everything a run of batches is a function of (docs/service.md): the dataset (a
path *under the server's root*, never a URL or an absolute path), the loader arguments, seed,
epoch, rank, world size and the batch range; the server keeps nothing between requests.
Everything here is pure (no I/O): the server then resolves the dataset (:func:`dataset_path`
confines it to the root) and checks the arguments against the manifest
(:func:`shardstream.loaders.options.loader_options`, the same checks as the local loaders).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import InputError
from ..loaders.slicing import parse_slice
from ..server.paths import is_hidden
from .wire import LAYOUTS, X_DTYPES

#: a run may hold at most this many batches ...
MAX_RUN_BATCHES = 1024
#: ... and its response at most this many bytes (the limit on the work one request asks for)
MAX_RUN_BYTES = 256 << 20
#: each side of ``resize`` at most this
MAX_SIDE = 4096
#: ``normalize``'s mean and std: at most this many values each
MAX_CHANNELS = 64
#: bounds of the integer arguments (beyond them a request is refused with 400)
LIMITS = {"batch_size": (1, 1 << 20), "shuffle_buffer": (0, 1 << 31), "seed": (0, (1 << 63) - 1),
          "epoch": (0, 1 << 31), "rank": (0, 1 << 20), "world_size": (1, 1 << 20),
          "start": (0, 1 << 40), "stop": (1, 1 << 40)}
BOOLS = ("shuffle", "shard_shuffle", "drop_last")
FORMATS = ("tar", "parquet")
FIELDS = {"dataset", "slice", "manifest", "format", "resize", "layout", "dtype", "normalize",
          *LIMITS, *BOOLS}


def manifest_sha(manifest) -> str:
    """sha256 (hex) of a :class:`~shardstream.shards.manifest.Manifest`'s canonical JSON: what a
    request's ``manifest`` field names (client and server must have planned with the same)."""
    return hashlib.sha256(manifest.to_json().encode()).hexdigest()


class BadRequest(ValueError):
    """A request the server refuses; ``status`` is the HTTP status (400, 404, 413)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BatchRequest:
    """A checked request: ``dataset`` the path segments under the root; ``loader`` the keyword
    arguments for :func:`loader_options` (batch_size, resize, shuffle, ..., format); the run is
    batches ``start .. stop - 1`` of the rank's epoch; ``manifest``: the sha256 of the manifest
    the client planned with (None: not checked); ``layout``: "nchw" or "nhwc"; ``split_slice``:
    the dataset's slice suffix (``"[:90%]"``, loaders/slicing.py) or None."""

    dataset: tuple
    loader: dict
    start: int
    stop: int
    layout: str
    manifest: str | None
    split_slice: str | None = None


def dataset_segments(name) -> tuple:
    """A dataset name (``"fashion-mnist/train"``) -> its path segments under the root.
    BadRequest (400) for anything that could leave the root or reach another host: a URL or
    ``s3://`` location (any ``:``), an absolute path, ``..`` / ``.`` / ``~`` / empty segments,
    backslashes, control characters, hidden or temporary names."""
    if not isinstance(name, str) or not name.strip("/"):
        raise BadRequest(400, f"dataset={name!r}: must name a split under the server's root, "
                              f"e.g. 'fashion-mnist/train'")
    if ":" in name or name.startswith(("/", "~")):
        raise BadRequest(400, f"dataset={name!r}: only paths under the server's root are "
                              f"served: no URLs, bucket names or absolute paths")
    segments = name.strip("/").split("/")
    for seg in segments:
        if seg in ("", ".", "..") or seg.startswith("~") or "\\" in seg or any(
                ord(c) < 32 or ord(c) == 127 for c in seg):
            raise BadRequest(400, f"dataset={name!r}: '..', '.', '~', empty segments, "
                                  f"backslashes and control characters are not allowed")
        if is_hidden(seg):
            raise BadRequest(400, f"dataset={name!r}: hidden and temporary names are not served")
    return tuple(segments)


def _int(body: dict, key: str, default=None) -> int:
    value = body.get(key, default)
    low, high = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(400, f"{key}={value!r}: must be an integer in {low} .. {high}")
    return value


def _normalize(value):
    """``normalize``: null or ``[mean, std]``, each a list of 1 .. MAX_CHANNELS numbers ->
    None or a pair of tuples (the loaders' checks -- channels, finite, std > 0 -- follow)."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or any(
            not isinstance(v, list) or not 1 <= len(v) <= MAX_CHANNELS or any(
                isinstance(e, bool) or not isinstance(e, (int, float)) for e in v)
            for v in value)):
        raise BadRequest(400, f"normalize={value!r}: must be null or [mean, std], each a list "
                              f"of 1 .. {MAX_CHANNELS} numbers")
    return tuple(value[0]), tuple(value[1])


def parse_request(body) -> BatchRequest:
    """The checked :class:`BatchRequest` of a decoded JSON request body; BadRequest (400, or 413
    for a run over :data:`MAX_RUN_BATCHES`) with a message naming the argument otherwise."""
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object (docs/service.md)")
    unknown = set(body) - FIELDS
    if unknown:
        raise BadRequest(400, f"unknown request fields {sorted(unknown)}; known: {sorted(FIELDS)}")
    dataset = dataset_segments(body.get("dataset"))
    loader = {key: _int(body, key, 0 if key in ("seed", "epoch", "rank") else None)
              for key in ("batch_size", "seed", "epoch", "rank")}
    loader["world_size"] = _int(body, "world_size", 1)
    loader["shuffle_buffer"] = _int(body, "shuffle_buffer", 10_000)
    for key in BOOLS:
        value = body.get(key, key != "drop_last")
        if not isinstance(value, bool):
            raise BadRequest(400, f"{key}={value!r}: must be true or false")
        loader[key] = value
    resize = body.get("resize")
    if resize is not None:
        if (not isinstance(resize, list) or len(resize) != 2 or
                any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIDE
                    for v in resize)):
            raise BadRequest(400, f"resize={resize!r}: must be null or [height, width], each "
                                  f"1 .. {MAX_SIDE}")
        resize = tuple(resize)
    loader["resize"] = resize
    loader["dtype"] = body.get("dtype", "float32")
    if loader["dtype"] not in X_DTYPES:
        raise BadRequest(400, f"dtype={loader['dtype']!r}: must be one of {list(X_DTYPES)}")
    loader["normalize"] = _normalize(body.get("normalize"))
    fmt = body.get("format", "auto")
    if fmt not in ("auto", *FORMATS):
        raise BadRequest(400, f"format={fmt!r}: must be 'auto', 'tar' or 'parquet'")
    loader["format"] = fmt
    layout = body.get("layout", "nchw")
    if layout not in LAYOUTS:
        raise BadRequest(400, f"layout={layout!r}: must be one of {list(LAYOUTS)}")
    manifest = body.get("manifest")
    if manifest is not None and (not isinstance(manifest, str) or len(manifest) != 64):
        raise BadRequest(400, f"manifest={manifest!r}: must be the manifest's sha256 (64 hex "
                              f"digits) or absent")
    start, stop = _int(body, "start"), _int(body, "stop")
    if stop <= start:
        raise BadRequest(400, f"start={start}, stop={stop}: the run is batches start .. stop - 1; "
                              f"stop must be above start")
    if stop - start > MAX_RUN_BATCHES:
        raise BadRequest(413, f"start={start}, stop={stop}: at most {MAX_RUN_BATCHES} batches "
                              f"per request; ask for shorter runs")
    if loader["rank"] >= loader["world_size"]:
        raise BadRequest(400, f"rank={loader['rank']} is not below "
                              f"world_size={loader['world_size']}")
    split_slice = body.get("slice")
    if split_slice is not None:
        try:
            parse_slice(split_slice, "dataset")
        except InputError as exc:
            raise BadRequest(400, f"slice={split_slice!r}: {exc}") from None
    return BatchRequest(dataset, loader, start, stop, layout, manifest, split_slice)
