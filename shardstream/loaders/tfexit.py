"""Stopping the tf.data pipelines of :func:`~shardstream.tf_dataset` before Python shuts down.

Why: a ``tf_dataset`` hands its chunks to tf.data through ``tf.numpy_function``, Python code
that tf.data's own (C++) threads call.  When the interpreter exits with such an iterator still
alive -- a ``for X, y in ds`` loop ended by Ctrl-C keeps its iterator referenced from the
traceback until the very end -- the iterator used to be destroyed during interpreter
finalization: its destructor waits for the tf.data threads, and a tf.data thread inside (or
entering) the Python function can no longer take the GIL then (CPython ends such threads), so
the process hung for ever or aborted.  :func:`stop_all` runs at exit (``atexit``, which is
before finalization, while threads still run): it shuts every open pass down (the Python
function then raises at once instead of reading), waits until tf.data makes no call into
Python for a moment, and destroys the C++ side of every live
tf.data iterator (TensorFlow's ``OwnedIterator``), waiting for tf.data's threads while they can
still finish.  The Python iterator objects stay; using one after exit began raises.

No framework import here: iterators are recognised by their class (``OwnedIterator`` from a
``tensorflow`` module), so this module stays importable without TensorFlow.
"""

from __future__ import annotations

import atexit
import functools
import gc
import threading
import time
import weakref

_open: weakref.WeakSet = weakref.WeakSet()  # objects with a shutdown() method (tf_loader._Passes)
_lock = threading.Lock()
_registered: list = []
_calls = {"active": 0, "last": 0.0}  # Python calls from tf.data in flight; when the last ended
#: at exit, tf.data must have made no call into Python for this long before its iterators are
#: destroyed (seconds), waiting at most QUIET_LIMIT
QUIET, QUIET_LIMIT = 0.05, 2.0


def register(passes) -> None:
    """Have ``passes.shutdown()`` called, and the live tf.data iterators destroyed, at exit."""
    with _lock:
        _open.add(passes)
        if not _registered:
            atexit.register(stop_all)
            _registered.append(stop_all)


def counted(fn):
    """``fn`` (called by tf.data through ``numpy_function``), counting the calls in flight."""
    @functools.wraps(fn)
    def call(*args):
        with _lock:
            _calls["active"] += 1
        try:
            return fn(*args)
        finally:
            with _lock:
                _calls["active"] -= 1
                _calls["last"] = time.monotonic()
    return call


def _wait_quiet() -> bool:
    """Sleep (the GIL released) until no counted call is in flight and none ended for
    :data:`QUIET` s, at most :data:`QUIET_LIMIT` s; whether it got quiet.  A tf.data thread
    waiting for the GIL gets it meanwhile: its call then raises at once (the passes are shut
    down), instead of needing the GIL while the iterator's destructor holds it."""
    end = time.monotonic() + QUIET_LIMIT
    while time.monotonic() < end:
        with _lock:
            busy = _calls["active"] or time.monotonic() - _calls["last"] < QUIET
        if not busy:
            return True
        time.sleep(0.01)
    return False


def _tf_iterators() -> list:
    """The live tf.data iterators of this process (TensorFlow's ``OwnedIterator`` objects)."""
    return [obj for obj in gc.get_objects()
            if type(obj).__name__ == "OwnedIterator"
            and type(obj).__module__.startswith("tensorflow.")]


def stop_all() -> int:
    """Shut down every registered pass and destroy the C++ iterator of every live tf.data
    iterator; returns how many iterators were destroyed.  Called at exit; a no-op when no
    ``tf_dataset`` was built."""
    with _lock:
        passes = list(_open)
    if not passes:
        return 0
    for p in passes:
        p.shutdown()
    _wait_quiet()
    stopped = 0
    for it in _tf_iterators():
        # the iterator object holds the only reference to its resource handle: dropping it
        # runs the C++ iterator's destructor now, which stops and joins tf.data's threads
        # (holding the GIL: hence the quiet period first)
        if it.__dict__.pop("_iterator_resource", None) is not None:
            stopped += 1
    return stopped
