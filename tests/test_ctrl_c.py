"""Issue 18 item 1: Ctrl-C ends a training loop promptly, every time, in both frameworks.

Each case starts a child process that iterates a loader for ever (``reshuffle_each_iteration``
for tf.data, ``set_epoch`` for torch), sends it a real SIGINT once it has had its first
batches, and requires it to exit within :data:`EXIT_WITHIN` seconds the way Python exits on an
unhandled ``KeyboardInterrupt``: the traceback on stderr, then killed by SIGINT (CPython
re-raises the signal, so ``returncode == -2``; a shell shows exit status 130).  Before the fix
about half the tf.data children hung for ever after printing the traceback (see
``shardstream/loaders/tfexit.py``).  The interrupt comes at a different moment each
repetition (0, 0.1, 0.2 s after the first batches).

Budget: ~60 s on 2 cores (each child imports its framework).  Measured before merging:
10 repetitions of every setting, none hung (docs/loaders.md, "Stopping").
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

#: seconds a child has to exit after the SIGINT (measured: 1-2 s, most of it TensorFlow's own
#: teardown)
EXIT_WITHIN = 30
ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import faulthandler, signal, sys
    # the test sends SIGUSR1 to a child that did not exit in time: the stack of every thread
    # goes to stderr (the failure shows where it hung)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Python leaves SIGINT ignored when it starts ignored (a job started with `&` by a
    # non-interactive shell, as some CI runners do): a terminal's Ctrl-C is what is tested
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import shardstream as ss

    location, framework, workers, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seen = 0
    if framework == "tf":
        ds = ss.tf_dataset(location, batch_size=16, resize=(32, 32), num_parallel=workers,
                           shuffle_buffer=300, reshuffle_each_iteration=True)
        epochs = iter(int, 1)   # for ever
        for _ in epochs:
            for X, y in ds:
                seen += 1
                if seen == 3:
                    print("ready", flush=True)
    else:
        loader = ss.torch_loader(location, batch_size=16, resize=(32, 32), num_workers=workers,
                                 worker_mode=mode, shuffle_buffer=300)
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            epoch += 1
            for X, y in loader:
                seen += 1
                if seen == 3:
                    print("ready", flush=True)
""")

# (framework, workers, worker_mode, repetitions): tf.data is where the hang was, so it gets
# the repetitions
CASES = [("tf", 1, "-", 3), ("tf", 2, "-", 3),
         ("torch", 0, "thread", 2), ("torch", 2, "thread", 2), ("torch", 2, "process", 2)]


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctrl_c") / "child.py"
    path.write_text(CHILD)
    return path


def interrupt(child_script, location, framework, workers, mode, delay):
    """Run one child, SIGINT it ``delay`` s after its first batches; (returncode, seconds to
    exit after the signal, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    child = subprocess.Popen(
        [sys.executable, str(child_script), location, framework, str(workers), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline() == "ready\n", child.communicate(timeout=60)[1][-3000:]
        time.sleep(delay)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        try:
            _, err = child.communicate(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)   # faulthandler: every thread's stack to stderr
            time.sleep(2)
            child.kill()
            err = child.communicate()[1]
            pytest.fail(f"{framework} workers={workers} {mode}: still running "
                        f"{EXIT_WITHIN} s after SIGINT (delay {delay} s); its stderr, then "
                        f"its threads:\n{err[-12000:]}")
        return child.returncode, time.monotonic() - sent, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("framework, workers, mode, reps", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_sigint_ends_the_loop_promptly(loader_splits, child_script, framework, workers, mode,
                                       reps):
    location = loader_splits["npy"][0]
    for rep in range(reps):
        code, _seconds, err = interrupt(child_script, location, framework, workers, mode,
                                        delay=0.1 * (rep % 3))
        if code in (-signal.SIGABRT, -signal.SIGSEGV) and "KeyboardInterrupt" not in err:
            # a known, separate bug inside TensorFlow (~1 in 30 tf.data children on 2 cores,
            # with or without shardstream's re-delivery): a SIGINT landing in the
            # execution_mode block TensorFlow wraps around every next() crashes the process
            # at once ("free(): invalid next size"), before Python prints the traceback
            # (docs/loaders.md, "Stopping").  It does end the process promptly, which is
            # what this test guards; it is reported, not hidden.
            pytest.xfail(f"{framework}: the process crashed on SIGINT ({code}): {err[-300:]}")
        assert code == -signal.SIGINT, (code, err[-3000:])
        assert "\nKeyboardInterrupt\n" in err, err[-3000:]
        assert "Python is exiting" not in err and "op_kernel" not in err, err[-3000:]


def test_the_exit_hook_destroys_live_iterators(loader_splits):
    """The hook itself, in this process: an iterator left half way is destroyed by it (its
    pass is shut down, the C++ iterator gone), and using it afterwards raises."""
    from shardstream.loaders import tfexit

    ds = __import__("shardstream").tf_dataset(loader_splits["npy"][0], batch_size=16,
                                              num_parallel=2, shuffle_buffer=300)
    it = iter(ds)
    next(it)
    assert tfexit.stop_all() >= 1
    assert ds._shardstream_passes.stopped and not ds._shardstream_passes.open
    with pytest.raises(AttributeError):
        next(it)


DROPPED = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)   # see CHILD
    if sys.argv[1] == "install":
        from shardstream.loaders import interrupt
        interrupt.install()

    class Slow:
        def __del__(self):
            print("in __del__", flush=True)
            time.sleep(10)   # the SIGINT arrives here: Python drops the KeyboardInterrupt

    Slow()                   # destroyed at once
    for _ in range(20):      # what a training loop would do next
        time.sleep(0.1)
    print("survived", flush=True)
""")


@pytest.mark.parametrize("install", [True, False], ids=["installed", "python-alone"])
def test_a_ctrl_c_dropped_in_a_destructor_is_delivered_again(tmp_path, install):
    """A real SIGINT while the main thread runs a ``__del__``: CPython drops the
    KeyboardInterrupt ("Exception ignored in"); with :mod:`shardstream.loaders.interrupt`
    installed (both loaders install it) it is delivered again right after, and the process ends
    by SIGINT; without it, the loop goes on to the end (what the CI run saw in tf.data)."""
    script = tmp_path / "dropped.py"
    script.write_text(DROPPED)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, str(script), "install" if install else "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline() == "in __del__\n"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=EXIT_WITHIN)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "Exception ignored in" in err and "KeyboardInterrupt" in err, err
    if install:
        assert child.returncode == -signal.SIGINT, (child.returncode, err)
        assert "survived" not in out
    else:
        assert child.returncode == 0 and out == "survived\n", (child.returncode, out, err)


LEAKED_LOCK = textwrap.dedent("""
    import multiprocessing, sys
    q = multiprocessing.Queue()
    q.put(1)                      # starts the queue's feeder thread
    if sys.argv[1] == "install":
        from shardstream.loaders import interrupt
        interrupt.unlock_queues_at_exit()
    q._notempty._lock.acquire()   # what a KeyboardInterrupt inside Queue.put leaves behind
    print("exiting", flush=True)
""")


@pytest.mark.parametrize("install", [True, False], ids=["installed", "python-alone"])
def test_a_queue_lock_left_taken_does_not_hang_the_exit(tmp_path, install):
    """DataLoader process workers: a Ctrl-C landing inside ``multiprocessing.Queue.put`` leaves
    the queue's lock taken, and multiprocessing's exit finalizer then waits for it for ever
    (1 interrupted run in 10 in a stress run); the hook the torch loader registers releases
    it first.  Python alone still hangs (the control: killed after 10 s)."""
    script = tmp_path / "leaked.py"
    script.write_text(LEAKED_LOCK)
    child = subprocess.Popen([sys.executable, str(script), "install" if install else "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        out, err = child.communicate(timeout=EXIT_WITHIN if install else 10)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if install:
        assert not hung and child.returncode == 0 and out == "exiting\n", (child.returncode, err)
    else:
        assert hung


def _run(tmp_path, code, *args, timeout=EXIT_WITHIN):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_a_ctrl_c_dropped_at_the_very_end_does_not_cut_the_exit_hooks(tmp_path):
    """A KeyboardInterrupt dropped in the script's last statement: the main thread has ended
    when it would be re-delivered, so it is not, and the exit hooks (tf.data's, the read-ahead
    joins) run to the end."""
    done = _run(tmp_path, """
        import atexit, time
        from shardstream.loaders import interrupt
        interrupt.install()
        def exit_hook():           # stands for tfexit.stop_all / execute._join_at_exit
            time.sleep(0.3)
            print("exit hook finished", flush=True)
        atexit.register(exit_hook)
        class D:
            def __del__(self):
                raise KeyboardInterrupt
        D()
    """)
    assert done.stdout == "exit hook finished\n", done.stderr
    assert "atexit" not in done.stderr


def test_a_hook_chained_by_another_library_makes_no_cycle(tmp_path):
    """A library chaining ``sys.unraisablehook`` between two loader builds: the unraisable
    exception is reported once by each hook, no RecursionError."""
    done = _run(tmp_path, """
        import sys
        from shardstream.loaders import interrupt
        interrupt.install()
        prev = sys.unraisablehook
        def lib_hook(u):
            print("lib_hook saw", u.exc_type.__name__, flush=True)
            prev(u)
        sys.unraisablehook = lib_hook
        interrupt.install()
        class D:
            def __del__(self):
                raise ValueError("boom in __del__")
        d = D(); del d
        print("alive", flush=True)
    """)
    assert done.returncode == 0 and done.stdout == "lib_hook saw ValueError\nalive\n", done
    assert done.stderr.count("Exception ignored in") == 1 and "RecursionError" not in done.stderr


def test_leaving_a_process_worker_loop_with_a_queue_lock_left_taken_does_not_hang(
        tmp_path, loader_splits):
    """The program goes on after the Ctrl-C (a notebook, ``except KeyboardInterrupt:
    save()``): leaving the loop tears the DataLoader down, which puts its stop signals on the
    index queues -- one of whose locks the interrupted ``put`` left taken. The loader releases
    it first."""
    done = _run(tmp_path, """
        import gc, multiprocessing.queues, sys
        import shardstream as ss
        loader = ss.torch_loader(sys.argv[1], batch_size=16, num_workers=2,
                                 worker_mode="process")
        batches = iter(loader)
        next(batches)
        queues = [o for o in gc.get_objects() if isinstance(o, multiprocessing.queues.Queue)
                  and o._thread is not None]
        queues[0]._notempty._lock.acquire()    # what an interrupted Queue.put leaves
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            batches.close(); del batches       # leaving the for loop
            gc.collect()
        print("saved", flush=True)
    """, loader_splits["npy"][0], timeout=60)
    assert done.returncode == 0 and done.stdout == "saved\n", done.stderr[-2000:]
