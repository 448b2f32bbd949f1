"""Where a bearer token goes (issue 13): only to the scheme, host and port of the location it was
given for.  Never to a dataset mirror, never after a redirect to another origin, never in clear
text to a host that is not this machine unless the user says so.  Two real HTTP servers on
127.0.0.1 (two ports = two origins) record every Authorization header they receive."""

import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from shardstream import storage
from shardstream.converters import DATASETS, download_raw
from shardstream.converters.idx import idx_bytes
from shardstream.errors import InputError, NotFoundError
from shardstream.loaders import open_stream

TOKEN = "s3cr3t-t0ken"


class RecordingServer:
    """Serves files of ``root`` (GET/HEAD), answers ``/go/<url>`` with a 302 to ``<url>``, and
    records ``(path, Authorization header or None)`` of every request."""

    def __init__(self, root):
        self.root, self.seen = str(root), []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body):
                owner.seen.append((self.path, self.headers.get("Authorization")))
                if self.path.startswith("/go/"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/go/"):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = os.path.join(owner.root, self.path.lstrip("/"))
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                data = open(path, "rb").read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self):
                self._answer(True)

            def do_HEAD(self):
                self._answer(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def tokens(self):
        return {auth for _, auth in self.seen}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def two_servers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = RecordingServer(tmp_path / "a"), RecordingServer(tmp_path / "b")
    yield a, b, tmp_path
    a.close()
    b.close()


def test_a_bound_token_goes_to_its_origin_only(two_servers):
    a, b, root = two_servers
    (root / "a" / "x").write_bytes(b"on a")
    (root / "b" / "y").write_bytes(b"on b")
    opts = storage.with_token(a.url + "/x", None, TOKEN)
    assert opts["token_origin"] == a.url          # scheme://host:port
    assert storage.read_bytes(a.url + "/x", opts) == b"on a"
    assert storage.size(a.url + "/x", opts) == 4
    # the same options used for a URL on another origin (another port) carry no token
    assert storage.read_bytes(b.url + "/y", opts) == b"on b"
    assert a.tokens() == {f"Bearer {TOKEN}"}
    assert b.tokens() == {None}


def test_no_token_after_a_redirect_to_another_origin(two_servers):
    a, b, root = two_servers
    (root / "a" / "x").write_bytes(b"same origin")
    (root / "b" / "y").write_bytes(b"other origin")
    opts = storage.with_token(a.url, None, TOKEN)
    assert storage.read_bytes(a.url + "/go/" + a.url + "/x", opts) == b"same origin"
    assert storage.read_bytes(a.url + "/go/" + b.url + "/y", opts) == b"other origin"
    assert a.tokens() == {f"Bearer {TOKEN}"}       # both requests to a, and the redirect target
    assert b.seen == [("/y", None)]


def test_the_environment_token_never_reaches_a_dataset_mirror(two_servers, monkeypatch):
    # convert's raw download from the mirrors with SHARDSTREAM_TOKEN set: the mirror sees none
    a, b, root = two_servers
    spec = DATASETS["fashion-mnist"]
    rng = np.random.default_rng(0)
    sums = {}
    for name in spec.all_files():
        shape = (3,) if "labels" in name else (3, 28, 28)
        data = idx_bytes(rng.integers(0, 10, shape).astype(np.uint8))
        (root / "b" / name).write_bytes(data)
        sums[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setenv("SHARDSTREAM_TOKEN", TOKEN)
    found = download_raw(spec, str(root / "dl"), mirror=b.url, checksums=sums, progress=False)
    assert set(found) == {"train", "test"}
    assert len(b.seen) == 4 and b.tokens() == {None}


def test_the_environment_token_is_bound_to_the_location_a_loader_reads(two_servers, make_split,
                                                                        monkeypatch):
    a, b, root = two_servers
    location, manifest, images, labels = make_split("split", n=20, shard_size=8)
    for name in os.listdir(location):
        (root / "a" / name).write_bytes(open(os.path.join(location, name), "rb").read())
    monkeypatch.setenv("SHARDSTREAM_TOKEN", TOKEN)
    source = open_stream(a.url, format="tar", cache_dir=str(root / "cache"))
    got = np.concatenate([source.load(i)[0] for i in range(manifest.num_shards)])
    assert np.array_equal(got, images)
    assert a.tokens() == {f"Bearer {TOKEN}"} and len(a.seen) >= 1 + manifest.num_shards
    # a bare storage call (not a location the user named) gets no token from the environment
    with pytest.raises(NotFoundError):
        storage.read_bytes(b.url + "/nothing")
    assert b.tokens() == {None}


@pytest.mark.parametrize("url, allowed", [
    ("http://127.0.0.1:8000/d", True),
    ("http://127.0.0.2/d", True),
    ("http://localhost:9/d", True),
    ("http://[::1]:8000/d", True),
    ("https://data.example.org/d", True),
    ("http://data.example.org/d", False),
    ("http://10.0.0.7:8000/d", False),
])
def test_clear_text_tokens_only_to_this_machine_unless_allowed(url, allowed):
    if allowed:
        assert storage.with_token(url, None, TOKEN)["token"] == TOKEN
    else:
        with pytest.raises(InputError, match="clear text.*allow_http_token"):
            storage.with_token(url, None, TOKEN)
        opts = storage.with_token(url, {"allow_http_token": True}, TOKEN)
        assert opts["token"] == TOKEN


def test_with_token_for_http_only_and_from_the_environment(monkeypatch):
    monkeypatch.delenv("SHARDSTREAM_TOKEN", raising=False)
    assert storage.with_token("https://h/x", {"retries": 1}, "t") == {
        "retries": 1, "token": "t", "token_origin": "https://h:443"}
    assert storage.with_token("https://h/x", {"retries": 1}) == {"retries": 1}
    monkeypatch.setenv("SHARDSTREAM_TOKEN", "from-env")
    assert storage.with_token("https://h/x")["token"] == "from-env"
    assert storage.with_token("https://h/x", {"token": "given"})["token"] == "given"
    assert storage.with_token("s3://b/x", {"retries": 1}, None) == {"retries": 1}
    assert storage.with_token("/local/x") is None
    with pytest.raises(InputError, match="token= is an HTTP bearer token.*s3://b/x"):
        storage.with_token("s3://b/x", None, "t")
