"""Reading the tar shards of another tool (webdataset's layout, any key scheme).

A webdataset tar holds samples as consecutive members sharing a key: the member's path up to
the first dot of its file name (``dir/0042.png`` and ``dir/0042.cls`` form sample
``dir/0042``; ``a.b.png`` is key ``a``, extension ``b.png``), as ``webdataset`` groups them.
A sample needs one image member -- extension (last part) ``png``, ``jpg``, ``jpeg`` or ``npy``
-- and a ``cls`` member holding its label as decimal text; other members (``json``, ``txt``
...) are ignored, and so are members whose name has no dot or starts with ``__``.
"""

from __future__ import annotations

import io
import re
import tarfile
import zlib

from ..errors import InputError

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "npy")
LABEL_EXTENSION = "cls"
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext
_FIX = "re-create or re-download the shard"


def _sample(where, key, members):
    """(image member name, image bytes, image extension, label) of one grouped sample."""
    images = [(n, d, e.rsplit(".", 1)[-1]) for n, d, e in members
              if e.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]
    labels = [(n, d) for n, d, e in members if e == LABEL_EXTENSION]
    have = ", ".join(n for n, _, _ in members)
    if not images:
        raise InputError(f"{where}: sample {key!r} has no image member (.png, .jpg, .npy); "
                         f"it has {have}")
    if len(images) > 1:
        raise InputError(f"{where}: sample {key!r} has {len(images)} image members ({have}); "
                         f"one image per sample")
    if not labels:
        raise InputError(f"{where}: sample {key!r} (member {images[0][0]}) has no .cls label "
                         f"member; every sample needs one (its class index as text)")
    name, data = labels[0]
    try:
        label = int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{where}: member {name} holds {bytes(data[:20])!r}, not a class "
                         f"index (decimal text)") from None
    return images[0][0], images[0][1], images[0][2], label


def read_samples(data: bytes, where: str):
    """Yield ``(member, image bytes, extension, label)`` for each sample of the tar shard
    ``data`` (plain or gzip), in order; ``where`` names the shard in errors."""
    group, key, current = [], None, None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
            for member in tar:
                current = member.name
                match = _KEY.match(member.name)
                if (not member.isfile() or match is None
                        or member.name.rsplit("/", 1)[-1].startswith("__")):
                    continue
                k, ext = match.group(1), match.group(2).lower()
                if k != key and group:
                    yield _sample(where, key, group)
                    group = []
                key = k
                group.append((member.name, tar.extractfile(member).read(), ext))
            current = None
    except InputError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        at = f" at member {current}" if current else ""
        raise InputError(f"{where}: truncated or damaged tar shard{at} ({type(exc).__name__}: "
                         f"{exc}); {_FIX}") from None
    if group:
        yield _sample(where, key, group)
