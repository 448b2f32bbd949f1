"""tfds-style split slicing: ``"shards/fashion_mnist/train[:90%]"``, ``"...train[90%:]"``.

A location may end in a *slice* ``[a:b]``: a contiguous range of the split's samples in their
global order (manifest shard order, then the index in the shard; global id ``i`` is sample
``i``).  Each bound is empty, a sample count (``[:1000]``, ``[-1000:]``: negative counts from
the end) or a percentage of the split (``[:90%]``, ``[10%:20%]``, ``[-10%:]``, ``[:12.5%]``).

Resolving against a split of ``n`` samples is the rule of ``tfds`` (its default
``rounding="closest"``), so the same string picks the same sample range as there:

1. a percentage ``p`` becomes ``int(round(p * n / 100.0))`` (Python's ``round``: halves to even);
2. ``lo, hi = slice(a, b).indices(n)[:2]`` (Python slicing: negatives count from the end,
   out-of-range bounds are clipped), then ``hi = max(hi, lo)``;
3. the slice is the ids ``lo .. hi - 1``; an empty one is an error.

Because a boundary resolves the same way wherever it appears, ``[:90%]`` and ``[90%:]`` (or
``[:k]`` and ``[k:]``) partition the split exactly.  A slice is contiguous: it inherits the
split's order (converted datasets keep their source's order -- Fashion-MNIST's is not sorted by
class; a class-sorted split sliced this way gives class-skewed parts, use ``val_fraction=`` of
the book's data module there, which carves a random subset).

The plan runs over the slice as if it were a split of its own (``docs/design.md``, "Split
slices"): over *virtual shards*, each shard of the split clipped to ``[lo, hi)``, those left
empty dropped; virtual id ``v`` is global id ``lo + v``.  :class:`SliceView` is that split
(a manifest look-alike), :class:`SlicedSource` reads it from the real shards (only those the
slice touches).  A location whose bracket suffix is not a valid slice is taken as a plain path
when that path exists locally (a folder named ``data[1]``), else it is an :class:`InputError`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from .. import storage
from ..errors import InputError

__all__ = ["EXAMPLES", "SplitSlice", "SliceView", "SlicedSource", "parse_slice", "sliced",
           "split_location", "view"]

#: shown by every slice error
EXAMPLES = ("train[:90%]", "train[90%:]", "train[10%:20%]", "train[:1000]", "train[-1000:]")
_SUFFIX = re.compile(r"^(?P<base>.*?)(?P<text>\[[^\[\]]*\])$", re.S)
_BOUND = r"(-?\d+(?:\.\d+)?%|-?\d+)?"
_SLICE = re.compile(rf"\[{_BOUND}:{_BOUND}\]")


def _hint(location) -> str:
    return (f"location {location!r}: a split slice is [start:stop] with sample counts or "
            f"percentages, e.g. {', '.join(EXAMPLES)}")


@dataclass(frozen=True)
class SplitSlice:
    """A parsed slice suffix: ``text`` as written (``"[:90%]"``); ``start`` and ``stop`` each
    None or ``(value, percent)`` (value an int for a count, a float for a percentage)."""

    text: str
    start: tuple | None
    stop: tuple | None

    def bounds(self, n: int, where: str = "") -> tuple[int, int]:
        """``(lo, hi)``: the slice of a split of ``n`` samples is ids ``lo .. hi - 1`` (the
        module's rule); InputError naming ``where`` when it is empty."""
        ends = [None if b is None else int(round(b[0] * n / 100.0)) if b[1] else b[0]
                for b in (self.start, self.stop)]
        lo, hi, _ = slice(*ends).indices(n)
        hi = max(hi, lo)
        if hi == lo:
            raise InputError(f"location {where + self.text!r}: the slice {self.text} of the "
                             f"{n} samples there is empty (ids {lo} .. {hi - 1}); valid "
                             f"examples: {', '.join(EXAMPLES)}")
        return lo, hi


def _bound(text: str | None, location: str):
    if not text:
        return None
    if text.endswith("%"):
        value = float(text[:-1])
        if not -100 <= value <= 100:
            raise InputError(f"{_hint(location)}; a percentage must be within -100% .. 100%, "
                             f"got {text}")
        return value, True
    return int(text), False


def split_location(location: str) -> tuple[str, SplitSlice | None]:
    """``(base location, SplitSlice or None)``: ``location`` without its slice suffix, and the
    slice (see the module doc).  The one parser of slice suffixes, for every location kind
    (paths, ``file://``, ``http(s)://``, ``s3://``)."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    match = _SUFFIX.match(location) if isinstance(location, str) else None
    if match is None:
        return location, None
    base, text = match.group("base"), match.group("text")
    parsed = _SLICE.fullmatch(text)
    if parsed is None:
        local = storage.local_path(location)
        if local is not None and os.path.exists(local):
            return location, None  # a real path with brackets in its name
        raise InputError(_hint(location) + (" (and no such folder exists)" if local else ""))
    if not base or base.endswith(("/", "://")):
        raise InputError(f"{_hint(location)}: the slice follows the split's location "
                         f"(shards/fashion_mnist/train[:90%])")
    return base, parse_slice(text, location)


def parse_slice(text: str, where: str = "") -> SplitSlice:
    """The :class:`SplitSlice` of a slice ``text`` alone (``"[:90%]"``); InputError naming
    ``where`` (the location it came with) when it is not one."""
    parsed = _SLICE.fullmatch(text) if isinstance(text, str) else None
    if parsed is None:
        raise InputError(f"{_hint(where or text)}; got {text!r}")
    return SplitSlice(text, _bound(parsed.group(1), where or text),
                      _bound(parsed.group(2), where or text))


class SliceView:
    """The split restricted to a slice, seen as a split of its own by the plan and the
    executors: ``shard_sizes`` int64 (S',), ``offsets`` int64 (S'+1,), ``num_samples``,
    ``num_shards`` of the *virtual shards* (each shard of ``base`` clipped to ``[lo, hi)``,
    the empty ones dropped); ``real`` int64 (S',) the shard of ``base`` each one is, ``first``
    int64 (S',) the index in that shard of its first sample; ``shards`` per format the entries
    of ``real``.  Every other attribute (``image_shape``, ``classes``, ``to_json`` ...) is
    ``base``'s: it describes the whole split (``label_counts`` too)."""

    def __init__(self, base, split_slice: SplitSlice, where: str = ""):
        self.base, self.split_slice = base, split_slice
        self.lo, self.hi = split_slice.bounds(int(base.num_samples), where)
        off = np.asarray(base.offsets, dtype=np.int64)
        start = np.clip(off[:-1], self.lo, self.hi)
        stop = np.clip(off[1:], self.lo, self.hi)
        self.real = np.flatnonzero(stop > start).astype(np.int64)
        self.first = start[self.real] - off[:-1][self.real]
        self.shard_sizes = stop[self.real] - start[self.real]
        self.offsets = np.zeros(self.real.size + 1, dtype=np.int64)
        np.cumsum(self.shard_sizes, out=self.offsets[1:])
        for a in (self.real, self.first, self.shard_sizes, self.offsets):
            a.setflags(write=False)
        self.num_samples = self.hi - self.lo
        self.num_shards = int(self.real.size)
        self.shards = {fmt: tuple(base.shards[fmt][int(r)] for r in self.real)
                       for fmt in base.formats}

    def __getattr__(self, name):
        if name.startswith("__") or name == "base":  # (unpickling: no base yet)
            raise AttributeError(name)
        return getattr(self.base, name)

    def global_ids(self, ids) -> np.ndarray:
        """int64: the split's global ids of the slice's (virtual) ids."""
        return np.asarray(ids, dtype=np.int64) + self.lo


def sliced(source, split_slice: SplitSlice | None, where: str = ""):
    """``source`` (a ShardSource of the whole split) restricted to ``split_slice``: itself when
    None, else a :class:`SlicedSource` of its :class:`SliceView`."""
    if split_slice is None:
        return source
    return SlicedSource(source, SliceView(source.manifest, split_slice, where))


def view(manifest, split_slice: SplitSlice | None, where: str = ""):
    """``manifest`` itself (no slice) or its :class:`SliceView` (``manifest`` may be a view
    already: the slice applies to its base)."""
    base = getattr(manifest, "base", manifest)
    if split_slice is None:
        return base
    return SliceView(base, split_slice, where)


class SlicedSource:
    """A :class:`~shardstream.loaders.execute.ShardSource` of a :class:`SliceView`: shard
    ``v`` is virtual shard ``v``, read from real shard ``view.real[v]`` (only those samples)."""

    def __init__(self, source, slice_view: SliceView):
        self.source, self.manifest = source, slice_view
        self.format, self.location = source.format, source.location

    def load(self, shard_index: int, want=None):
        """:meth:`ShardSource.load` of virtual shard ``shard_index``: images uint8
        (m, H, W, C), labels int64 (m,) of its samples ``want`` (default: all)."""
        v = self.manifest
        if want is None:
            want = np.arange(int(v.shard_sizes[shard_index]), dtype=np.int64)
        want = np.asarray(want, dtype=np.int64) + int(v.first[shard_index])
        return self.source.load(int(v.real[shard_index]), want)

    def release(self, shard_index: int) -> None:
        self.source.release(int(self.manifest.real[shard_index]))

    def prefetch(self, shard_indices) -> None:
        self.source.prefetch([int(self.manifest.real[int(i)]) for i in shard_indices])
