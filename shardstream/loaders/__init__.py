"""Shards in, minibatches out: the plan, its execution, the resize, and the two adapters.

:mod:`.plan` (pure numpy, no I/O), :mod:`.execute` (reads shards, runs a plan), :mod:`.resize` (the
one resize), :mod:`.pixels` (float32 or uint8 batches), :mod:`.options` (argument checks shared by
both adapters); the adapters :mod:`.torch_loader` and :mod:`.tf_loader` are the only modules that
import a framework, and are imported here on first use of :func:`torch_loader`, :func:`tf_dataset`
or :func:`tf_dataset_fn`.
"""

import importlib

from .execute import iter_batches, open_stream
from .options import loader_options
from .pixels import to_uint8
from .plan import plan_epoch
from .resize import resize_weights, to_float

_ADAPTERS = {"torch_loader": "torch_loader", "tf_dataset": "tf_loader",
             "tf_dataset_fn": "tf_loader"}

__all__ = ["plan_epoch", "open_stream", "iter_batches", "loader_options", "to_float",
           "to_uint8", "resize_weights", *_ADAPTERS]


def __getattr__(name):
    if name not in _ADAPTERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ADAPTERS[name]}"), name)
