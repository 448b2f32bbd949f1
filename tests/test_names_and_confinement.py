"""One rule for names (issue 13): what the converter accepts as a dataset or split name, what a
manifest accepts as a shard name and what the server serves are the same set; and the server's
confinement checks, tested directly (prefix siblings, ``..``, encoded forms, symlinks)."""

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from shardstream.converters.writer import check_names
from shardstream.errors import InputError, ManifestError
from shardstream.server.listing import list_folder
from shardstream.server.paths import Reject, inside, resolve, split_request_path
from shardstream.shards import Manifest, ShardInfo, is_plain_name

#: (name, plain?) — each must be judged the same way by converter, manifest and server
NAMES = [
    ("train-000000.tar", True),
    ("fashion-mnist", True),
    ("x~y.tar", True),
    ("train", True),
    (".hidden.tar", False),
    ("..", False),
    ("a..b.tar", False),
    ("a/b.tar", False),
    ("a\\b.tar", False),
    ("x.tar.tmp", False),
    ("x.tar.part", False),
    ("x.tar~", False),
    ("tab\there.tar", False),
    ("n" * 251 + ".tar", True),           # 255 characters
    ("n" * 252 + ".tar", False),
]


def _manifest_with_shard(name):
    shards = {"tar": (ShardInfo("train-000000.tar", 1, 10, "0" * 64),)}
    doc = json.loads(Manifest("ds", "train", 1, (2, 2, 1), "npy", ("a",), (1,), shards,
                              {"synthetic": True}).to_json())
    doc["shards"]["tar"][0]["name"] = name
    return doc


@pytest.mark.parametrize("name, plain", NAMES, ids=[repr(n[:20]) for n, _ in NAMES])
def test_one_rule_for_converter_manifest_and_server(name, plain, tmp_path, shard_server):
    assert is_plain_name(name) is plain
    # the converter: dataset and split names
    for dataset, split in ((name, "train"), ("ds", name)):
        if plain:
            check_names(dataset, split)
        else:
            with pytest.raises(InputError, match="cannot be a folder of the output"):
                check_names(dataset, split)
    # the manifest: a shard name (a tar shard's name must end in .tar)
    doc = _manifest_with_shard(name if name.endswith(".tar") else name + ".tar")
    if is_plain_name(doc["shards"]["tar"][0]["name"]):
        Manifest.from_json(json.dumps(doc), "m.json")
    else:
        with pytest.raises(ManifestError, match="plain"):
            Manifest.from_json(json.dumps(doc), "m.json")
    # the server: a file of that name is served and listed exactly when the name is plain
    try:
        (tmp_path / "root").mkdir()
        (tmp_path / "root" / name).write_bytes(b"data")
    except OSError:                       # a name the filesystem refuses (e.g. '/', '..')
        return
    url = shard_server(str(tmp_path / "root"))
    quoted = urllib.request.quote(name, safe="")
    try:
        with urllib.request.urlopen(f"{url}/{quoted}") as resp:
            served = resp.read() == b"data"
    except urllib.error.HTTPError as exc:
        assert exc.code in (400, 404)
        served = False
    assert served is plain
    listed = [e["name"] for e in list_folder(str(tmp_path / "root"), str(tmp_path / "root"))]
    assert (name in listed) is plain


def test_inside_needs_the_separator():
    assert inside("/srv/shards", "/srv/shards")
    assert inside("/srv/shards", "/srv/shards/a/b.tar")
    assert not inside("/srv/shards", "/srv/shards-private/secret.tar")
    assert not inside("/srv/shards", "/srv/shardsX")
    assert not inside("/srv/shards", "/srv")
    assert inside("/", "/anything")


@pytest.mark.parametrize("raw, status", [
    ("/a/../b", 404), ("/a/%2e%2e/b", 404), ("/%2E%2E/x", 404), ("/a/./b", 404),
    ("/a%2fb", 400), ("/a%5cb", 400), ("/a%00b", 400), ("/a\\b", 400), ("relative", 400),
    ("/%ff", 400), ("/.git/config", 404), ("/x.tar.tmp", 404), ("/a//b", 404),
])
def test_hostile_request_paths_are_refused(raw, status):
    with pytest.raises(Reject) as info:
        split_request_path(raw)
    assert info.value.status == status


def test_symlinks_cannot_leave_the_root(tmp_path):
    root = tmp_path / "shards"
    (root / "ds").mkdir(parents=True)
    (root / "ds" / "ok.tar").write_bytes(b"ok")
    private = tmp_path / "shards-private"          # a sibling whose name extends the root's
    private.mkdir()
    (private / "secret.tar").write_bytes(b"secret")
    os.symlink(private, root / "ds" / "peek")
    os.symlink(private / "secret.tar", root / "ds" / "secret.tar")
    os.symlink(root / "ds" / "ok.tar", root / "ds" / "alias.tar")    # inside: fine
    real_root = os.path.realpath(root)
    for segments in (["ds", "peek", "secret.tar"], ["ds", "secret.tar"], ["ds", "peek"]):
        with pytest.raises(Reject) as info:
            resolve(real_root, segments)
        assert info.value.status == 404
    real, st = resolve(real_root, ["ds", "alias.tar"])
    assert real == os.path.realpath(root / "ds" / "ok.tar") and st.st_size == 2
    listed = {e["name"] for e in list_folder(real_root, os.path.join(real_root, "ds"))}
    assert listed == {"ok.tar", "alias.tar"}


def test_served_bytes_never_come_from_outside(tmp_path, shard_server):
    root = tmp_path / "shards"
    root.mkdir()
    (tmp_path / "shards-private").mkdir()
    (tmp_path / "shards-private" / "s.tar").write_bytes(np.arange(9, dtype=np.uint8).tobytes())
    os.symlink(tmp_path / "shards-private", root / "p")
    url = shard_server(str(root))
    for path in ("/p/s.tar", "/p/", "/../shards-private/s.tar", "/%2e%2e/shards-private/s.tar"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + path)
        assert info.value.code in (400, 404), path
