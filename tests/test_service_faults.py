"""Issue 16 items 2, 4, 5: batch servers as real processes (``python -m shardstream
serve-batches``, 127.0.0.1, started and stopped here) that die mid-epoch.

- SIGKILL one of two servers mid-epoch: the client re-asks the other for the runs it has not
  received, and the epoch is bitwise the local one (torch and tf.data);
- every server gone: a ServiceError naming them after a bounded retry, never a short epoch;
- SIGTERM: requests in flight are answered in full, the server exits 0, clients fail over;
- the trainer's memory stays bounded by the runs in flight, not the epoch.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import shardstream as ss
from shardstream.errors import ServiceError
from shardstream.service import BatchService, decode_run

TOKEN = "fault-token"
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(loader_splits):
    return str(pathlib.Path(loader_splits["npy"][0]).parent)


class Server:
    """``shardstream serve-batches ROOT --port 0`` in a subprocess; ``.url`` from its banner."""

    def __init__(self, root, workers=1):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                  ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardstream", "serve-batches", root, "--port", "0",
             "--token", TOKEN, "--workers", str(workers), "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, self.proc.stderr.read())
        self.url = line.split(" at ")[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def start(root):
    started = []

    def make(n=2, workers=1):
        servers = [Server(root, workers) for _ in range(n)]
        started.extend(servers)
        return servers

    yield make
    for s in started:
        s.stop()


def _client(servers, **kw):
    kw = {"in_flight": 1, "run_bytes": 1, "attempts": 3, "retry_wait": 0.05, **kw}
    return BatchService([s.url for s in servers], TOKEN, **kw)


def _numpy(batches):
    return [(np.array(X), np.array(y)) for X, y in batches]


def assert_same(got, want):
    assert len(got) == len(want) > 0
    for k, ((X, y), (eX, ey)) in enumerate(zip(got, want)):
        assert np.array_equal(X, eX), f"batch {k}: pixels differ"
        assert np.array_equal(y, ey), f"batch {k}: labels differ"


def _epoch(framework, location, **kw):
    if framework == "torch":
        return ss.torch_loader(location, **kw)
    return ss.tf_dataset(location, **kw)


KW = dict(batch_size=32, seed=3, epoch=1, resize=(20, 24))


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_sigkill_mid_epoch_fails_over_and_the_epoch_is_identical(root, start, framework):
    # tf.data asks for runs of 8 batches: smaller batches give it 16 runs to share
    kw = KW if framework == "torch" else {**KW, "batch_size": 8}
    want = _numpy(_epoch(framework, os.path.join(root, "npy"), **kw))
    servers = start(2)
    svc = _client(servers)
    got = []
    for X, y in _epoch(framework, "npy", service=svc, **kw):
        got.append((np.array(X), np.array(y)))
        if len(got) == len(want) // 3:
            servers[0].proc.kill()          # SIGKILL, mid-epoch, with runs in flight
            servers[0].proc.wait(30)
    assert_same(got, want)
    first, second = (svc.stats[s.url] for s in servers)
    assert first["runs"] >= 1 and first["failures"] >= 1 and second["runs"] >= 1
    if framework == "torch":                    # runs of one batch: the survivor served most
        assert second["runs"] > len(want) // 2


def test_every_server_gone_is_a_clear_error_never_a_short_epoch(root, start):
    servers = start(2)
    svc = _client(servers)
    loader = ss.torch_loader("npy", service=svc, **KW)
    got = 0
    with pytest.raises(ServiceError) as exc:
        for _ in loader:
            got += 1
            if got == 3:
                for s in servers:
                    s.proc.kill()
                    s.proc.wait(30)
    assert got < len(loader)
    message = str(exc.value)
    assert all(s.url in message for s in servers), message
    assert "after 3 attempts" in message and "serve-batches" in message
    # no server at all when the loader is made: the same error, at construction
    with pytest.raises(ServiceError, match="no batch server answered") as exc:
        ss.torch_loader("npy", batch_size=8, service=_client(servers))
    assert all(s.url in str(exc.value) for s in servers)


def _slow_request(port):
    """A socket with a request in flight: 16 batches resized to 200 x 200 (~1 s of work)."""
    body = json.dumps({"dataset": "npy", "batch_size": 64, "start": 0, "stop": 16,
                       "resize": [200, 200], "layout": "nhwc"}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _read_response(sock) -> bytes:
    f = sock.makefile("rb")
    status = f.readline()
    length = None
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    assert status.startswith(b"HTTP/1.1 200"), status
    return f.read(length)


def test_sigterm_finishes_requests_in_flight_and_exits_0(root, start):
    (server,) = start(1)
    sock = _slow_request(server.port)
    sock.settimeout(60)
    time.sleep(0.5)              # the request is being computed (about 1 s of work)
    server.proc.send_signal(signal.SIGTERM)
    body = _read_response(sock)
    sock.close()
    assert server.proc.wait(60) == 0
    err = server.proc.stderr.read()
    assert "1 request(s) in flight finish first" in err, err
    run = decode_run(body)
    want = list(ss.tf_dataset(os.path.join(root, "npy"), batch_size=64, resize=(200, 200)))
    assert len(run.sizes) == len(want) == 16
    for (x, y), (eX, ey) in zip(run.batches(), want):
        assert np.array_equal(x, eX.numpy()) and np.array_equal(y, ey.numpy())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_sigterm_mid_epoch_clients_fail_over(root, start):
    want = _numpy(ss.torch_loader(os.path.join(root, "npy"), **KW))
    servers = start(2)
    svc = _client(servers)
    got = []
    for X, y in ss.torch_loader("npy", service=svc, **KW):
        got.append((np.array(X), np.array(y)))
        if len(got) == len(want) // 3:
            servers[0].proc.send_signal(signal.SIGTERM)
    assert_same(got, want)
    assert servers[0].proc.wait(60) == 0
    assert svc.stats[servers[1].url]["runs"] > len(want) // 2


def test_trainer_memory_is_bounded_by_the_runs_in_flight(root, start):
    servers = start(2)
    kw = dict(batch_size=64, resize=(96, 96))
    run_bytes = 64 * 96 * 96 * 4                      # one batch per run: 2.4 MB
    svc = _client(servers, run_bytes=run_bytes)
    loader = ss.torch_loader("npy", service=svc, **kw)
    epoch_bytes = len(loader) * run_bytes             # 16 runs: 38 MB
    tracemalloc.start()
    try:
        for _ in loader:
            time.sleep(0.02)                           # slower than the servers
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 2 runs in flight (1 per server) + the one being consumed, plus small change
    assert peak < 4 * run_bytes + (1 << 20), (peak, run_bytes)
    assert peak < epoch_bytes / 3
    assert svc.stats["peak_ahead"] <= 2
