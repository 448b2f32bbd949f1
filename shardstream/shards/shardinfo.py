"""The shards of a split as the manifest lists them: :class:`ShardInfo` (one shard file) and
:class:`ShardTable` (the shards of one format as columns, as the index stores them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name (relative to the split's location), sample count, size in bytes
    and sha256 (64 lowercase hex digits)."""

    name: str
    num_samples: int
    bytes: int
    sha256: str


class ShardTable(Sequence):
    """The shards of one format as columns (from the index, :mod:`.index`): a read-only
    sequence of :class:`ShardInfo` made on access, equal to any sequence of the same
    ShardInfos.  ``names`` bytes (S,), ``num_samples`` / ``bytes`` int64 (S,), ``sha256`` uint8
    (S, 32) raw digests."""

    __hash__ = None

    def __init__(self, names: np.ndarray, num_samples: np.ndarray, nbytes: np.ndarray,
                 sha256: np.ndarray):
        self.names, self.num_samples, self.bytes, self.sha256 = names, num_samples, nbytes, sha256
        for a in (names, num_samples, nbytes, sha256):
            a.setflags(write=False)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        return ShardInfo(self.names[i].decode("utf-8"), int(self.num_samples[i]),
                         int(self.bytes[i]), self.sha256[i].tobytes().hex())

    def __iter__(self):
        return iter(self._infos())

    def _infos(self) -> tuple:
        """Every ShardInfo, made once (vectorised) on the first full iteration."""
        infos = self.__dict__.get("_all")
        if infos is None:
            hexes = self.sha256.tobytes().hex()
            infos = tuple(ShardInfo(name.decode("utf-8"), n, b, hexes[64 * i:64 * i + 64])
                          for i, (name, n, b) in enumerate(zip(self.names.tolist(),
                                                               self.num_samples.tolist(),
                                                               self.bytes.tolist())))
            self.__dict__["_all"] = infos
        return infos

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_all"}

    def __eq__(self, other):
        if isinstance(other, ShardTable):
            return all(np.array_equal(getattr(self, k), getattr(other, k))
                       for k in ("names", "num_samples", "bytes", "sha256"))
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"ShardTable({len(self)} shards)"
