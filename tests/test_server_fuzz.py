"""Fuzzing the shard server's request handling (issue 7, item 2).

Hypothesis generates request methods, raw request targets (``..``, percent-encodings, encoded
slashes, backslashes, NUL bytes, very long paths) and headers (Range, If-Range, If-None-Match,
If-Match, Accept, Authorization) and sends them literally over a socket to a real server.
Whatever arrives: never a 5xx, never a byte of a file outside the served folder, never a hang
(every request has a 10 s socket timeout), and the bytes of a shard are always the right ones
for the status (200 whole file, 206 the slice Content-Range names, 416 ``bytes */size``).
Bounded: a few hundred examples per test, ~10 s for the file.
"""

import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import TOKEN, raw, write_split

from shardstream.server.paths import Reject, resolve, split_request_path
from shardstream.server.ranges import normalize_range

FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SHARD = "/fashion-mnist/train/train-000000.tar"

# pieces a hostile path is made of
_PIECES = ["fashion-mnist", "train", "train-000000.tar", "manifest.json", "..", ".", "%2e%2e",
           "%2E%2e", "%2f", "%2F", "%5c", "\\", "%00", "%", "%zz", "%ff", "secret.txt",
           "link-out.tar", "dir-out", ".hidden", "..%2f..%2fsecret.txt", "%2e", "~", "x.tmp",
           "//", "?", "?format=html", "#", ";", "%3f", "%23", "%c0%ae%c0%ae", "%25", "+"]
_VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_segment = st.one_of(st.sampled_from(_PIECES), st.text(_VISIBLE, min_size=0, max_size=40),
                     st.text(_VISIBLE, min_size=200, max_size=300))
_path = st.lists(_segment, min_size=0, max_size=30).map(lambda parts: "/" + "/".join(parts))
targets = st.one_of(
    _path, _path, _path, _path,                                         # mostly paths
    st.text(_VISIBLE, min_size=1, max_size=100),                       # not even starting with /
    st.integers(1, 12_000).map(lambda n: "/" + "a" * n),                # longer than line limits
    st.sampled_from(["*", "http://127.0.0.1/../secret.txt", "//etc/passwd", "/" + "../" * 50]),
)
methods = st.one_of(st.just("GET"), st.just("GET"), st.just("HEAD"),
                    st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS",
                                     "TRACE", "CONNECT", "PROPFIND", "get"]),
                    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!"), min_size=1,
                            max_size=20))
_num = st.one_of(st.integers(0, 6000), st.integers(0, 10 ** 30), st.just(2 ** 63))
range_values = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", _num, _num),
    st.builds(lambda a: f"bytes={a}-", _num),
    st.builds(lambda b: f"bytes=-{b}", _num),
    st.lists(st.builds(lambda a, b: f"{a}-{b}", _num, _num), min_size=2, max_size=5).map(
        lambda rs: "bytes=" + ",".join(rs)),
    st.sampled_from(["bytes=", "bytes=-", "bytes=--1", "bytes=1--2", "bytes=-0", "bytes=0-0",
                     "items=0-1", "bytes 0-1", "bytes=0x10-20", "bytes=1e3-", "bytes= 1 - 2",
                     "bytes=" + "9" * 5000 + "-"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
)
_text_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
etag_values = st.one_of(st.sampled_from(["*", '"x"', 'W/"x"', '"', '""', "W/", ',,,',
                                         '"a", W/"b"']),
                        _text_value)
headers = st.dictionaries(
    st.sampled_from(["Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since",
                     "If-Unmodified-Since", "Accept", "Accept-Encoding", "Authorization"]),
    st.one_of(range_values, etag_values, _text_value,
              st.sampled_from(["text/html", "application/json", "gzip", f"Bearer {TOKEN}",
                               "Bearer", "Bearer  ", "Sun, 06 Nov 1994 08:49:37 GMT",
                               "Sun, 06 Nov 9999 08:49:37 GMT", "Mon, 99 Foo 2020 99:99:99"])),
    max_size=4,
)


@pytest.fixture
def fuzz_site(tmp_path, shard_server):
    """Two servers (open, and with a token) for a root whose neighbours hold a secret."""
    root = tmp_path / "root"
    files = write_split(root, shard_bytes=(5000, 300))
    secret = b"SECRET-" + os.urandom(8).hex().encode()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(secret)
    (tmp_path / "secret.txt").write_bytes(secret)
    train = root / "fashion-mnist" / "train"
    os.symlink(outside / "secret.txt", train / "link-out.tar")
    os.symlink(outside, root / "dir-out")
    (train / ".hidden").write_bytes(secret)
    (train / "x.tmp").write_bytes(secret)
    return shard_server(root), shard_server(root, token=TOKEN, quiet=False), files, secret


def _check_shard_response(status, hdrs, body, data):
    """The bytes of a GET on a shard are right for the status."""
    if status == 200:
        assert body == data
    elif status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", hdrs["content-range"])
        a, b, size = map(int, m.groups())
        assert size == len(data) and 0 <= a <= b < size
        assert body == data[a:b + 1]
    elif status == 416:
        assert hdrs["content-range"] == f"bytes */{len(data)}"
    else:
        assert status in (304, 412), status


def test_fuzz_requests_never_5xx_never_outside(fuzz_site, caplog):
    open_url, token_url, files, secret = fuzz_site
    caplog.set_level("INFO")

    @settings(FUZZ, max_examples=600)
    @given(method=methods, target=targets, hdrs=headers, authed=st.booleans())
    def check(method, target, hdrs, authed):
        url = token_url if authed else open_url
        status, got, body = raw(url, target, method=method, headers=list(hdrs.items()))
        assert 100 <= status < 500, (status, method, target, hdrs)
        assert secret not in body
        if authed and hdrs.get("Authorization", "").split() != ["Bearer", TOKEN]:
            assert status in (400, 401, 414, 431), status     # malformed requests never get in
        if status in (200, 206) and method == "GET" and target == SHARD:
            _check_shard_response(status, got, body, files["train-000000.tar"])

    check()
    # the access log (on for the token server) wrote its lines without a failure, no handler
    # raised, and the token never reached a log record
    from aiohttp.http_exceptions import HttpProcessingError

    time.sleep(0.2)
    access = [r for r in caplog.records if r.name == "shardstream.server.access"]
    assert len(access) > 50
    crashes = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None
               and not isinstance(r.exc_info[1], HttpProcessingError)]
    assert crashes == [], crashes[0].getMessage()
    assert TOKEN not in caplog.text


def test_fuzz_range_and_validators_on_a_shard(fuzz_site):
    open_url, _, files, secret = fuzz_site
    data = files["train-000000.tar"]

    @FUZZ
    @given(rng=range_values, if_range=st.one_of(st.none(), etag_values),
           inm=st.one_of(st.none(), etag_values))
    def check(rng, if_range, inm):
        hdrs = [("Range", rng)]
        if if_range is not None:
            hdrs.append(("If-Range", if_range))
        if inm is not None:
            hdrs.append(("If-None-Match", inm))
        status, got, body = raw(open_url, SHARD, headers=hdrs)
        assert status in (200, 206, 304, 400, 416), (status, hdrs)
        if status != 400:
            _check_shard_response(status, got, body, data)

    check()


@FUZZ
@given(size=st.integers(0, 10 ** 12), header=range_values)
def test_fuzz_normalize_range_stays_in_the_file(size, header):
    out = normalize_range(header, size)
    if out is None:
        return
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", out)
    assert m, out
    a, b = int(m.group(1)), m.group(2)
    if b == "":
        assert a >= size                                 # unsatisfiable: FileResponse sends 416
    else:
        assert 0 <= a <= int(b) < size


def test_fuzz_path_resolution_never_leaves_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f.tar").write_bytes(b"x")
    os.symlink(tmp_path, root / "a" / "up")
    os.symlink("../../..", root / "a" / "b" / "rel-up")
    real_root = os.path.realpath(root)
    raw_piece = st.one_of(st.sampled_from(["a", "b", "f.tar", "up", "rel-up", "..", ".", "%2e%2e",
                                           "%2f", "%5c", "%00", "", "%2e", "%252e%252e"]),
                          st.text(_VISIBLE, max_size=20))

    @FUZZ
    @given(st.lists(raw_piece, max_size=12))
    def check(pieces):
        try:
            segments, _ = split_request_path("/" + "/".join(pieces))
            real, _ = resolve(real_root, segments)
        except Reject as rej:
            assert rej.status in (400, 404)
            return
        assert real == real_root or real.startswith(real_root + os.sep)
        for s in segments:
            assert s not in ("", ".", "..") and "/" not in s and "\\" not in s and "\0" not in s

    check()
