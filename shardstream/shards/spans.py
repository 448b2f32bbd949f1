"""Spans: the variable-size payloads of one shard (its PNGs) as cuts of one buffer.

A shard's PNG members lie back to back in the bytes it was read from (a tar file, a Parquet
column's values buffer).  :class:`Spans` names them by offsets instead of one Python object
each, so that compiled code can walk all of them in one call (:mod:`._zinflate`) and so that a
subset is two fancy-indexed arrays, not a list.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Spans"]


class Spans:
    """``n`` byte strings cut from one buffer: item ``i`` is ``buffer[starts[i]:stops[i]]``.

    ``buffer`` uint8 (m,) C-contiguous; ``starts``, ``stops`` integers (n,) with
    ``0 <= starts <= stops <= m`` (checked, and kept as read-only int64 copies: compiled readers
    rely on it).  Indexing with an int gives a read-only :class:`memoryview`, with a slice a
    :class:`Spans`; ``len`` and iteration work as for a list of bytes."""

    __slots__ = ("buffer", "starts", "stops")

    def __init__(self, buffer, starts, stops):
        buffer = np.frombuffer(buffer, np.uint8) if not isinstance(buffer, np.ndarray) else buffer
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise ValueError(f"Spans needs a C-contiguous uint8 (m,) buffer, got {buffer.dtype} "
                             f"{buffer.shape}")
        starts, stops = _offsets(starts), _offsets(stops)
        if starts.shape != stops.shape or starts.ndim != 1:
            raise ValueError(f"Spans needs starts and stops of one (n,) shape, got "
                             f"{starts.shape} and {stops.shape}")
        if starts.size and (starts.min() < 0 or (stops < starts).any()
                            or stops.max() > buffer.size):
            raise ValueError(f"Spans out of bounds: starts/stops must satisfy 0 <= start <= "
                             f"stop <= {buffer.size}")
        self.buffer, self.starts, self.stops = buffer, starts, stops

    @classmethod
    def of(cls, payloads) -> Spans:
        """``payloads`` itself if it is a :class:`Spans`, else its items (bytes-like) copied
        back to back into a new buffer."""
        if isinstance(payloads, Spans):
            return payloads
        views = [memoryview(p).cast("B") for p in payloads]
        sizes = np.array([v.nbytes for v in views], dtype=np.int64)
        stops = np.cumsum(sizes)
        return cls(np.frombuffer(b"".join(views), np.uint8), stops - sizes, stops)

    def take(self, indices) -> Spans:
        """The items ``indices`` (int (k,), repeats allowed) as a :class:`Spans` on the same
        buffer (no payload bytes copied)."""
        indices = np.asarray(indices)
        if indices.size and indices.dtype.kind not in "iu":
            raise ValueError(f"Spans.take needs integer indices, got {indices.dtype}")
        return Spans(self.buffer, self.starts[indices], self.stops[indices])

    def __len__(self) -> int:
        return int(self.starts.size)

    def __getitem__(self, i) -> memoryview:
        if isinstance(i, slice):
            return Spans(self.buffer, self.starts[i], self.stops[i])
        return self.buffer[self.starts[i]:self.stops[i]].data.toreadonly()

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _offsets(values) -> np.ndarray:
    """int64 (n,) read-only copy of integer offsets (what was checked stays what is used)."""
    values = np.asarray(values)
    if values.size and values.dtype.kind not in "iu":
        raise ValueError(f"Spans needs integer offsets, got {values.dtype}")
    values = np.array(values, dtype=np.int64, order="C")
    values.setflags(write=False)
    return values
