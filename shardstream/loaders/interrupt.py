"""A Ctrl-C that Python would drop is delivered again.

Why: CPython raises ``KeyboardInterrupt`` in whatever Python code the main thread runs when the
SIGINT arrives.  When that code is a destructor (``__del__``, a generator finalized by the
garbage collector), Python cannot propagate the exception: it prints ``Exception ignored in:
... KeyboardInterrupt`` and the program goes on as if nothing happened.  A tf.data loop runs
such a destructor on every element (TensorFlow's ``Executor.__del__``, around each
``next()``), so now and then a Ctrl-C vanished and the loop kept training
(seen in CI: the interrupted child was still running 30 s later).

:func:`install` chains a :data:`sys.unraisablehook` that, for a dropped ``KeyboardInterrupt``
in the main thread, lets the original hook report it and then, from a short-lived thread once
the hook has returned, simulates the SIGINT again (:func:`_thread.interrupt_main`): the main
thread's SIGINT handler -- Python's default, or the user's own -- runs again at its next
instruction, outside the destructor (should that be another destructor, the same happens
again).  Nothing else changes: no signal handler is replaced, other unraisable exceptions
pass through untouched, and once the interpreter is shutting down (the main thread has ended)
nothing is re-delivered, so the exit hooks (:mod:`.tfexit`) run undisturbed.  Both loaders
call :func:`install` when built.

:func:`unlock_queues_at_exit` covers the other way a Ctrl-C goes wrong, with DataLoader worker
*processes*: the interrupt can land in ``multiprocessing.Queue.put`` between taking the queue's
lock and entering its ``with`` block (the DataLoader puts an index on a queue for every
batch), so the lock is never released and, at exit, multiprocessing's own finalizer waits for
it for ever (seen: about 1 interrupted run in 10) -- or, if the program goes on (a notebook,
``except KeyboardInterrupt: save()``), the DataLoader's own teardown does.  :func:`unlocking`
(the torch loader's process-worker batches) releases its DataLoader's abandoned queue locks
when the iteration is left by an exception, and the exit hook, registered when process workers
start, runs before multiprocessing's finalizer and releases any left.
"""

from __future__ import annotations

import _thread
import atexit
import gc
import multiprocessing.queues
import sys
import threading
import time

_state = {"previous": None, "installed": False, "queues_hook": False}
_busy = threading.local()  # re-entry guard of _hook (a hook chain that leads back to it)
#: seconds a queue lock may stay taken before it counts as abandoned (the queue's feeder
#: thread holds it for microseconds at a time)
QUEUE_LOCK_WAIT = 0.5


def _hook(unraisable) -> None:
    if getattr(_busy, "on", False):  # another library's hook chained back to us: stop here
        sys.__unraisablehook__(unraisable)
        return
    _busy.on = True
    try:
        (_state["previous"] or sys.__unraisablehook__)(unraisable)
    finally:
        _busy.on = False
        if (unraisable.exc_type is not None
                and issubclass(unraisable.exc_type, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
                and threading.main_thread().is_alive()):
            threading.Thread(target=_deliver, name="shardstream-ctrl-c", daemon=True).start()


def _deliver() -> None:
    """Simulate the SIGINT once the main thread has left :func:`_hook` (an interrupt raised
    inside the hook would be dropped again), waiting at most ~0.5 s for that; not once the
    interpreter is shutting down (the exit hooks must run undisturbed)."""
    main = threading.main_thread().ident
    for _ in range(100):
        time.sleep(0.005)
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code is not _hook.__code__:
            frame = frame.f_back
        if frame is None:
            break
    if threading.main_thread().is_alive():
        _thread.interrupt_main()


def install() -> None:
    """Chain :func:`_hook` in front of the current :data:`sys.unraisablehook`, once per
    process (installing again after another library chained its own hook to ours would make a
    cycle)."""
    if not _state["installed"]:
        _state["installed"] = True
        _state["previous"] = sys.unraisablehook
        sys.unraisablehook = _hook


def unlocking(iterator, split):
    """The items of ``split(item)`` for each item of ``iterator`` (a DataLoader's iterator);
    when left by an exception (a Ctrl-C, or the consumer stopping), first release the locks of
    its index queues that an interrupted ``put`` left taken, so that its teardown can put its
    stop signals there instead of waiting for ever."""
    try:
        for item in iterator:
            yield from split(item)
    except BaseException:
        unlock_queues(getattr(iterator, "_index_queues", ()))
        raise


def unlock_queues_at_exit() -> None:
    """Have :func:`unlock_queues` (of every live queue) run at exit, before multiprocessing's
    finalizers (``atexit`` runs the last registered first; multiprocessing registered its own on
    import).  Once."""
    if not _state["queues_hook"]:
        _state["queues_hook"] = True
        atexit.register(unlock_queues)


def unlock_queues(queues=None) -> int:
    """Release the lock of each ``multiprocessing`` queue of ``queues`` (default: every live
    one) that stays taken for :data:`QUEUE_LOCK_WAIT` s (left taken by a
    ``KeyboardInterrupt``); how many were."""
    if queues is None:  # (type(): a dead weakproxy among the objects raises on isinstance)
        queues = [o for o in gc.get_objects()
                  if issubclass(type(o), multiprocessing.queues.Queue)]
    released = 0
    for queue in queues:
        lock = getattr(getattr(queue, "_notempty", None), "_lock", None)
        if lock is None or not hasattr(lock, "acquire"):
            continue
        if lock.acquire(timeout=QUEUE_LOCK_WAIT):  # free (or freed meanwhile): give it back
            lock.release()
            continue
        try:  # a plain Lock: any thread may release it
            lock.release()
            released += 1
        except RuntimeError:  # its holder let go just now
            pass
    return released
