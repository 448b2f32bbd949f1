"""Raw data in, shards out (``shardstream convert``, ``synth``, ``datasets``).

Modules: :mod:`.datasets` (the registry of known datasets), :mod:`.fetch` (find or download raw
files), :mod:`.idx` (the IDX file format), :mod:`.synth` (synthetic stand-ins), :mod:`.imagefolder`
(folders of class subfolders), :mod:`.writer` (one split -> shards + manifest) and
:mod:`.convert` (the command's entry point); :mod:`.cluster` (``convert --cluster``: one task
per shard on Dask, the ``cluster`` extra) is not imported here, so the package works without
Dask.
"""

from .convert import convert
from .datasets import DATASETS, get_spec
from .fetch import download_raw, find_raw
from .idx import read_idx, write_idx
from .imagefolder import convert_imagefolder
from .synth import synthesize
from .writer import write_split

__all__ = ["convert", "convert_imagefolder", "synthesize", "DATASETS", "get_spec", "find_raw",
           "download_raw", "read_idx", "write_idx", "write_split"]
