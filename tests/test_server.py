"""``shardstream serve``: the HTTP shard server (issue 5).

Every test talks HTTP to a real server on 127.0.0.1 (the ``shard_server`` fixture, or the
``shardstream serve`` command in a subprocess).  Hostile paths are sent over a raw socket so
that no client library normalises them first.  Time budget for this file: ~30 s.
"""

import asyncio
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import aiohttp
import numpy as np
import pytest

from shardstream.server import make_app
from shardstream.server.paths import split_request_path
from shardstream.server.ranges import normalize_range
from shardstream.shards.manifest import Manifest, ShardInfo

TOKEN = "tok-9f8e7d6c5b4a"


# ---------------------------------------------------------------------------------------------
# helpers


def write_split(root, dataset="fashion-mnist", split="train", shard_bytes=(3000, 5000, 1234),
                seed=0, formats=("tar",)):
    """A split folder with random shard files and a valid manifest; returns {name: bytes}."""
    rng = np.random.default_rng(seed)
    folder = root / dataset / split
    folder.mkdir(parents=True, exist_ok=True)
    files, shards = {}, {}
    for fmt in formats:
        infos = []
        for i, n in enumerate(shard_bytes):
            name = f"{split}-{i:06d}.{fmt}"
            data = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
            (folder / name).write_bytes(data)
            files[name] = data
            infos.append(ShardInfo(name, 2, n, hashlib.sha256(data).hexdigest()))
        shards[fmt] = tuple(infos)
    num = 2 * len(shard_bytes)
    m = Manifest(dataset=dataset, split=split, num_samples=num, image_shape=(28, 28, 1),
                 encoding="npy", classes=("a", "b"), label_counts=(num - 1, 1), shards=shards,
                 source={"synthetic": True})
    (folder / "manifest.json").write_text(m.to_json())
    return files


def fetch(url, method="GET", headers=None):
    """(status, headers, body) of one request through aiohttp's client."""

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.request(method, url, headers=headers or {}) as r:
                return r.status, r.headers.copy(), await r.read()

    return asyncio.run(go())


def raw(url, target, method="GET", headers=(), timeout=10):
    """Send ``method target`` literally over a socket; (status, {header: value}, body)."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host.encode(),
             b"Connection: close"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *hlines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in hlines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), hdrs, body


@pytest.fixture
def site(tmp_path):
    """A served root (one split) next to a secret file outside it, plus traps inside it."""
    root = tmp_path / "root"
    root.mkdir()
    files = write_split(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"SECRET-" + os.urandom(8).hex().encode()
    (outside / "secret.txt").write_bytes(secret)
    (tmp_path / "secret.txt").write_bytes(secret)
    train = root / "fashion-mnist" / "train"
    os.symlink(outside / "secret.txt", train / "link-out.tar")          # file symlink out
    os.symlink(outside, root / "dir-out")                               # folder symlink out
    os.symlink(train / "train-000000.tar", train / "link-in.tar")       # stays inside: allowed
    (train / ".hidden").write_bytes(secret)
    (train / ".train-000009.tar.abc.tmp").write_bytes(secret)
    (train / "partial.tar.tmp").write_bytes(secret)
    return root, files, secret


# ---------------------------------------------------------------------------------------------
# files, ranges, validators


def test_get_and_head_serve_exact_bytes_with_validators(site, shard_server):
    root, files, _ = site
    url = shard_server(root)
    manifest = Manifest.from_json((root / "fashion-mnist/train/manifest.json").read_text(), "m")
    for info in manifest.shards["tar"]:
        status, h, body = fetch(f"{url}/fashion-mnist/train/{info.name}")
        assert status == 200
        assert hashlib.sha256(body).hexdigest() == info.sha256 and len(body) == info.bytes
        assert h["Content-Length"] == str(info.bytes)
        assert h["Accept-Ranges"] == "bytes"
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', h["ETag"])           # strong, quoted
        assert h["Last-Modified"].endswith("GMT")
        hs, hh, hbody = fetch(f"{url}/fashion-mnist/train/{info.name}", method="HEAD")
        assert hs == 200 and hbody == b"" and hh["Content-Length"] == str(info.bytes)
        assert hh["ETag"] == h["ETag"]
    status, _, body = fetch(f"{url}/fashion-mnist/train/manifest.json")
    assert status == 200 and Manifest.from_json(body.decode(), "m") == manifest


RANGES = [  # header, status, (first, last) served or None
    ("bytes=0-99", 206, (0, 99)),
    ("bytes=100-", 206, (100, 2999)),
    ("bytes=-50", 206, (2950, 2999)),
    ("bytes=0-0", 206, (0, 0)),
    ("bytes=2999-2999", 206, (2999, 2999)),
    ("bytes=10-999999999", 206, (10, 2999)),        # last clamped to the file
    ("bytes=-999999", 206, (0, 2999)),              # suffix longer than the file
    ("BYTES = 5-6", 206, (5, 6)),                  # unit is case-insensitive, spaces allowed
    ("bytes=3000-", 416, None),
    ("bytes=3000-3005", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=99999999999999999999999999-", 416, None),
    ("bytes=10-5", 200, None),                     # invalid: ignored
    ("bytes=abc", 200, None),
    ("items=0-5", 200, None),
    ("bytes=0-1,5-6", 200, None),                  # multi-range: the whole file
]


@pytest.mark.parametrize("header,status,span", RANGES)
def test_byte_ranges(site, shard_server, header, status, span):
    root, files, _ = site
    url = shard_server(root)
    data = files["train-000000.tar"]
    got, h, body = raw(url, "/fashion-mnist/train/train-000000.tar", headers=[("Range", header)])
    assert got == status
    if status == 206:
        a, b = span
        assert body == data[a:b + 1]
        assert h["content-range"] == f"bytes {a}-{b}/{len(data)}"
        assert h["content-length"] == str(b - a + 1)
    elif status == 416:
        assert h["content-range"] == f"bytes */{len(data)}"
    else:
        assert body == data and "content-range" not in h


def test_normalize_range_pure():
    assert normalize_range(None, 10) is None
    assert normalize_range("bytes=2-4", 10) == "bytes=2-4"
    assert normalize_range("bytes=-3", 10) == "bytes=7-9"
    assert normalize_range("bytes=0-", 0) == "bytes=0-"          # empty file: unsatisfiable
    assert normalize_range("bytes=-5", 0) == "bytes=0-"
    assert normalize_range("bytes=" + "9" * 5000 + "-", 10) == f"bytes={10 ** 19}-"


def test_conditional_requests(site, shard_server):
    root, files, _ = site
    url = shard_server(root) + "/fashion-mnist/train/train-000001.tar"
    data = files["train-000001.tar"]
    _, h, _ = raw(url, "/fashion-mnist/train/train-000001.tar")
    etag, lm = h["etag"], h["last-modified"]
    for inm in (etag, f'"nope", {etag}', "*", "W/" + etag):            # weak comparison for INM
        status, h2, body = raw(url, "/fashion-mnist/train/train-000001.tar",
                               headers=[("If-None-Match", inm)])
        assert status == 304 and body == b"" and h2["etag"] == etag
    status, _, body = raw(url, "/fashion-mnist/train/train-000001.tar",
                          headers=[("If-None-Match", '"other"')])
    assert status == 200 and body == data
    # If-Range: the range only if the validator still matches (strong ETag or exact date)
    for validator, expect in ((etag, 206), (lm, 206), ('"stale"', 200), ("W/" + etag, 200),
                              ("Thu, 01 Jan 1970 00:00:00 GMT", 200)):
        status, _, body = raw(url, "/fashion-mnist/train/train-000001.tar",
                              headers=[("Range", "bytes=0-9"), ("If-Range", validator)])
        assert status == expect, validator
        assert body == (data[:10] if expect == 206 else data)
    # If-Match (412 when it fails)
    assert raw(url, "/fashion-mnist/train/train-000001.tar",
               headers=[("If-Match", '"other"')])[0] == 412
    # the ETag changes when the file changes
    path = root / "fashion-mnist/train/train-000001.tar"
    path.write_bytes(data + b"x")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    status, h3, body = raw(url, "/fashion-mnist/train/train-000001.tar",
                           headers=[("If-None-Match", etag)])
    assert status == 200 and h3["etag"] != etag and body == data + b"x"


def test_compressed_sibling_is_never_substituted(site, shard_server):
    root, files, _ = site
    (root / "fashion-mnist/train/train-000000.tar.gz").write_bytes(b"\x1f\x8b not the shard")
    url = shard_server(root)
    status, h, body = raw(url, "/fashion-mnist/train/train-000000.tar",
                          headers=[("Accept-Encoding", "gzip, br")])
    assert status == 200 and body == files["train-000000.tar"]
    assert "content-encoding" not in h


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_write_methods_are_refused(site, shard_server, method):
    root, files, _ = site
    url = shard_server(root)
    status, h, _ = fetch(f"{url}/fashion-mnist/train/train-000000.tar", method=method)
    assert status == 405
    assert {m.strip() for m in h["Allow"].split(",")} == {"GET", "HEAD"}
    assert (root / "fashion-mnist/train/train-000000.tar").read_bytes() == files["train-000000.tar"]


# ---------------------------------------------------------------------------------------------
# the index and folder listings


def test_index_lists_splits_as_json_and_html(tmp_path, shard_server):
    root = tmp_path / "root"
    write_split(root, shard_bytes=(100, 200), formats=("tar", "parquet"))
    write_split(root, split="test", shard_bytes=(50,))
    write_split(root, dataset='evil<script>"&', split="x", shard_bytes=(10,))
    broken = root / "broken" / "train"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    url = shard_server(root)

    status, h, body = fetch(url + "/")
    assert status == 200 and h["Content-Type"].startswith("application/json")
    import json

    index = json.loads(body)
    by = {(d["dataset"], d["split"]): d for d in index["datasets"]}
    assert set(by) == {("fashion-mnist", "train"), ("fashion-mnist", "test"),
                       ('evil<script>"&', "x")}
    train = by["fashion-mnist", "train"]
    assert train["num_samples"] == 4 and train["synthetic"] is True
    assert train["formats"] == {"tar": {"shards": 2, "bytes": 300},
                                "parquet": {"shards": 2, "bytes": 300}}
    assert train["bytes"] == 600 and train["encoding"] == "npy"
    assert train["url"] == "/fashion-mnist/train/"
    assert by['evil<script>"&', "x"]["url"] == "/evil%3Cscript%3E%22%26/x/"
    assert [p["path"] for p in index["problems"]] == ["broken/train"]
    assert "broken/train/manifest.json" in index["problems"][0]["error"]

    for kw in ({"url": url + "/?format=html"},
               {"url": url + "/", "headers": {"Accept": "text/html,application/xhtml+xml,*/*"}}):
        status, h, page = fetch(kw["url"], headers=kw.get("headers"))
        assert status == 200 and h["Content-Type"].startswith("text/html")
        text = page.decode()
        assert "<script>" not in text and "evil&lt;script&gt;&quot;&amp;" in text
        assert 'href="/fashion-mnist/train/"' in text and "fashion-mnist" in text
    assert fetch(url + "/?format=xml")[0] == 400

    # a new split shows up without restarting (the scan is cached only briefly)
    write_split(root, dataset="mnist", split="train", shard_bytes=(10,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = {d["dataset"] for d in json.loads(fetch(url + "/")[2])["datasets"]}
        if "mnist" in names:
            break
        time.sleep(0.2)
    assert "mnist" in names


def test_folder_listing(site, shard_server):
    root, files, secret = site
    url = shard_server(root)
    status, h, page = fetch(url + "/fashion-mnist/train/")
    assert status == 200 and h["Content-Type"].startswith("text/html")
    links = set(re.findall(r'href="([^"]+)"', page.decode()))
    assert {"train-000000.tar", "train-000001.tar", "train-000002.tar", "manifest.json",
            "link-in.tar"} <= links
    assert not any("hidden" in link or "tmp" in link or "link-out" in link for link in links)
    assert secret not in page
    import json

    status, h, body = fetch(url + "/fashion-mnist/train/?format=json")
    listing = json.loads(body)
    assert listing["split"]["num_samples"] == 6
    sizes = {e["name"]: e["bytes"] for e in listing["entries"]}
    assert sizes["train-000002.tar"] == 1234
    # a folder without the trailing slash, or a file with one, is not a file
    assert fetch(url + "/fashion-mnist/train")[0] == 404
    assert fetch(url + "/fashion-mnist/train/train-000000.tar/")[0] == 404


def test_storage_listdir_and_size_through_the_server(site, shard_server):
    from shardstream import storage

    root, files, _ = site
    url = shard_server(root)
    names = storage.listdir(url + "/fashion-mnist/train")
    assert {"train-000000.tar", "manifest.json"} <= set(names)
    assert not any(n.startswith(".") or n.endswith(".tmp") or n == "link-out.tar" for n in names)
    assert storage.size(url + "/fashion-mnist/train/train-000002.tar") == 1234
    got = storage.read_bytes(url + "/fashion-mnist/train/train-000001.tar")
    assert got == files["train-000001.tar"]


# ---------------------------------------------------------------------------------------------
# confinement


HOSTILE = [  # raw request target, expected status
    ("/../secret.txt", 404),
    ("/fashion-mnist/../../secret.txt", 404),
    ("/fashion-mnist/train/../../../secret.txt", 404),
    ("/%2e%2e/secret.txt", 404),
    ("/%2E%2E/%2e%2e/secret.txt", 404),
    ("/fashion-mnist/%2e%2e/%2e%2e/secret.txt", 404),
    ("/..%2fsecret.txt", 400),
    ("/fashion-mnist%2f..%2f..%2fsecret.txt", 400),
    ("/%2fetc%2fpasswd", 400),
    ("//etc/passwd", 404),
    ("/fashion-mnist//train/train-000000.tar", 404),
    ("/..\\secret.txt", 400),
    ("/fashion-mnist/..%5c..%5csecret.txt", 400),
    ("/fashion-mnist/train/train-000000.tar%00.json", 400),
    ("/fashion-mnist/train/%00", 400),
    ("/fashion-mnist/train/link-out.tar", 404),            # symlink pointing outside
    ("/dir-out/secret.txt", 404),                          # folder symlink pointing outside
    ("/dir-out/", 404),
    ("/fashion-mnist/train/.hidden", 404),
    ("/fashion-mnist/train/%2ehidden", 404),
    ("/fashion-mnist/train/.train-000009.tar.abc.tmp", 404),
    ("/fashion-mnist/train/partial.tar.tmp", 404),
    ("/fashion-mnist/train/./train-000000.tar", 404),
    ("/fashion-mnist/train", 404),                         # a folder is not a file
    ("/fashion-mnist/train/%ff.tar", 400),                 # not UTF-8
    ("/nope.tar", 404),
    ("http://127.0.0.1/../secret.txt", 404),               # absolute-form target
    ("/" + "a/" * 2000 + "x", 404),                        # long path
    ("/" + "b" * 5000, 404),                               # name too long for the OS
]


@pytest.mark.parametrize("target,expect", HOSTILE)
def test_nothing_outside_the_root_is_reachable(site, shard_server, target, expect):
    root, _, secret = site
    url = shard_server(root)
    for method in ("GET", "HEAD"):
        status, _, body = raw(url, target, method=method)
        assert status == expect, (method, target)
        assert secret not in body


def test_paths_that_stay_inside_are_served(site, shard_server):
    root, files, _ = site
    url = shard_server(root)
    assert raw(url, "/fashion-mnist/train/link-in.tar")[2] == files["train-000000.tar"]
    assert raw(url, "/fashion-mnist/train/train-00000%30.tar")[2] == files["train-000000.tar"]


def test_split_request_path_pure():
    assert split_request_path("/a/b%20c/d.tar") == (["a", "b c", "d.tar"], False)
    assert split_request_path("/a/") == (["a"], True)
    assert split_request_path("/") == ([], True)


# ---------------------------------------------------------------------------------------------
# authentication and the access log


def test_token_required_and_never_logged(site, shard_server, caplog):
    root, files, _ = site
    url = shard_server(root, token=TOKEN, quiet=False)
    path = "/fashion-mnist/train/train-000000.tar"
    caplog.set_level("INFO", logger="shardstream.server")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        for target in (path, "/", "/fashion-mnist/train/"):
            status, h, body = fetch(url + target, headers=headers)
            assert status == 401, (headers, target)
            assert h["WWW-Authenticate"].startswith("Bearer")
            assert files["train-000000.tar"] not in body
    assert fetch(url + path, method="PUT")[0] == 401                # auth before anything else
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, _, body = fetch(url + path, headers=good)
    assert status == 200 and body == files["train-000000.tar"]
    assert fetch(url + path, headers={"Authorization": f"bearer  {TOKEN} "})[0] == 200
    assert fetch(url + "/", headers=good)[0] == 200
    assert fetch(f"{url}{path}?token={TOKEN}", headers=good)[0] == 200    # query not logged
    assert fetch(url + path, method="HEAD", headers=good)[0] == 200
    time.sleep(0.2)                                # the access log is written after the response
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("shardstream.server")]
    assert any(re.search(rf'"GET {path}" 200 3000 B [0-9.]+ ms', line) for line in lines), lines
    assert any('"GET / " 401' in line or '"GET /" 401' in line for line in lines), lines
    assert TOKEN not in caplog.text and TOKEN not in "\n".join(lines)


def test_make_app_refuses_bad_arguments(tmp_path):
    from shardstream.errors import InputError

    with pytest.raises(InputError, match="not a folder"):
        make_app(tmp_path / "missing")
    with pytest.raises(InputError, match="token"):
        make_app(tmp_path, token="has space")
    from shardstream.server import start_app

    with pytest.raises(InputError, match="70000 is not a port number"):
        asyncio.run(start_app(make_app(tmp_path), "127.0.0.1", 70000))


# ---------------------------------------------------------------------------------------------
# load: 50 concurrent clients in one event loop


def test_fifty_concurrent_clients_get_correct_bytes(tmp_path, shard_server):
    root = tmp_path / "root"
    files = write_split(root, shard_bytes=[96_000 + 1000 * i for i in range(8)], seed=3)
    manifest = Manifest.from_json((root / "fashion-mnist/train/manifest.json").read_text(), "m")
    sha = {s.name: s.sha256 for s in manifest.shards["tar"]}
    url = shard_server(root, token=TOKEN) + "/fashion-mnist/train/"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def client(session, k):
        rng = random.Random(k)
        names = sorted(files)
        done = 0
        whole = names[k % len(names)]
        async with session.get(url + whole, headers=auth) as r:
            assert r.status == 200
            assert hashlib.sha256(await r.read()).hexdigest() == sha[whole]
        done += 1
        for _ in range(4):
            name = rng.choice(names)
            size = len(files[name])
            a = rng.randrange(size)
            b = rng.randrange(a, min(size, a + 20_000))
            async with session.get(url + name, headers={**auth, "Range": f"bytes={a}-{b}"}) as r:
                assert r.status == 206
                assert await r.read() == files[name][a:b + 1]
            done += 1
        return done

    async def main():
        conn = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            return await asyncio.gather(*(client(session, k) for k in range(50)))

    assert asyncio.run(main()) == [5] * 50


# ---------------------------------------------------------------------------------------------
# the command: banner, shutdown, busy port


def _start_cli(root, *args, env=None):
    env = {**os.environ, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "shardstream.cli", "serve", str(root), "--port",
                             "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    banner = []                                 # read the whole banner (it ends with Ctrl+C)
    while not banner or "Ctrl+C" not in banner[-1]:
        line = proc.stdout.readline().decode()
        if not line:
            break
        banner.append(line)
    banner = "".join(banner)
    m = re.search(r"at (http://127\.0\.0\.1:\d+)/", banner)
    assert m, (banner, proc.stderr.read().decode() if proc.poll() is not None else "")
    return proc, m.group(1), banner


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_shuts_down_gracefully_mid_download(tmp_path, sig):
    root = tmp_path / "root"
    write_split(root, shard_bytes=(10,))
    big = os.urandom(1 << 20) * 24                                   # 24 MiB
    (root / "big.bin").write_bytes(big)
    proc, url, _ = _start_cli(root, env={"SHARDSTREAM_TOKEN": TOKEN})
    try:
        host, port = urllib.parse.urlsplit(url).netloc.split(":")
        with socket.create_connection((host, int(port)), timeout=20) as bad:   # garbage request
            bad.sendall(f"GET /a b\x00 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
            assert bad.recv(100).startswith(b"HTTP/1.0 400")
        sock = socket.create_connection((host, int(port)), timeout=20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Connection: close\r\n\r\n".encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        proc.send_signal(sig)                                       # mid-download
        time.sleep(0.5)
        assert proc.poll() is None                                  # still sending to us
        # no new connections once shutdown began
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                time.sleep(0.1)
            except OSError:
                break
        else:
            pytest.fail("the server still accepts connections after the signal")
        chunks = [first]
        while True:
            b = sock.recv(1 << 20)
            if not b:
                break
            chunks.append(b)
        sock.close()
        body = b"".join(chunks).partition(b"\r\n\r\n")[2]
        assert len(body) == len(big) and body == big               # the download completed
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    err = err.decode()
    assert re.search(r'"GET /big.bin" 200 25165824 B [0-9.]+ ms', err), err
    assert "rejected a malformed request" in err                  # one line, no traceback
    assert "Traceback" not in err
    assert TOKEN not in err and TOKEN not in out.decode()


def test_cli_quiet_and_banner(tmp_path):
    root = tmp_path / "root"
    write_split(root, shard_bytes=(10,))
    proc, url, banner = _start_cli(root, "--quiet")
    try:
        assert fetch(url + "/fashion-mnist/train/train-000000.tar")[0] == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "GET" not in err.decode()                                # no access log
    out = banner + out.decode()
    assert f"{url}/fashion-mnist/train" in out                     # how to point loaders at it
    assert "torch_loader" in out


def test_cli_busy_port_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "shardstream.cli", "serve", str(tmp_path),
                              "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use; pick another with --port"]
    missing = subprocess.run([sys.executable, "-m", "shardstream.cli", "serve",
                              str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot serve")
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------------------------------------
# loaders streaming from the server (issue 5 item 6)


def _torch_batches(location, num_workers=0, **kw):
    import shardstream as ss

    loader = ss.torch_loader(location, batch_size=64, seed=7, num_workers=num_workers, **kw)
    return [(x.numpy(), y.numpy()) for x, y in loader]


def _tf_batches(location, num_workers=0, **kw):
    import shardstream as ss

    ds = ss.tf_dataset(location, batch_size=64, seed=7, num_parallel=max(1, num_workers), **kw)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def _assert_same(got, want):
    assert len(got) == len(want) > 0
    for (gx, gy), (wx, wy) in zip(got, want):
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loaders_over_the_server_equal_the_local_folder(fmnist_shards, train_split, shard_server,
                                                        tmp_path, monkeypatch, num_workers):
    # the token comes from $SHARDSTREAM_TOKEN, which the DataLoader workers inherit
    monkeypatch.setenv("SHARDSTREAM_TOKEN", TOKEN)
    url = shard_server(fmnist_shards, token=TOKEN) + "/fashion-mnist/train"
    _assert_same(_torch_batches(url, num_workers, cache_dir=str(tmp_path / "t")),
                 _torch_batches(train_split))
    _assert_same(_tf_batches(url, num_workers, cache_dir=str(tmp_path / "f"), format="parquet"),
                 _tf_batches(train_split, format="parquet"))


def test_loaders_send_the_token_in_storage_options(fmnist_shards, train_split, shard_server,
                                                 tmp_path, monkeypatch):
    from shardstream.errors import ShardstreamError

    monkeypatch.delenv("SHARDSTREAM_TOKEN", raising=False)
    url = shard_server(fmnist_shards, token=TOKEN) + "/fashion-mnist/train"
    with pytest.raises(ShardstreamError, match="manifest.json"):      # refused without it
        _torch_batches(url, cache_dir=str(tmp_path / "none"))
    _assert_same(_torch_batches(url, storage_options={"token": TOKEN},
                                cache_dir=str(tmp_path / "so")),
                 _torch_batches(train_split))


def test_loaders_send_the_token_given_as_an_argument(fmnist_shards, train_split, shard_server,
                                                     tmp_path, monkeypatch):
    monkeypatch.delenv("SHARDSTREAM_TOKEN", raising=False)
    url = shard_server(fmnist_shards, token=TOKEN) + "/fashion-mnist/train"
    _assert_same(_torch_batches(url, token=TOKEN, cache_dir=str(tmp_path / "t")),
                 _torch_batches(train_split))
    _assert_same(_tf_batches(url, token=TOKEN, cache_dir=str(tmp_path / "f")),
                 _tf_batches(train_split))
