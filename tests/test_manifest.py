"""manifest.json (issue 2 / issue 7): round trip, determinism, validation errors, loading, and
`shardstream info`."""

import copy
import json

import numpy as np
import pytest

from shardstream import __version__
from shardstream.cli import main
from shardstream.errors import ManifestError
from shardstream.shards.manifest import FORMAT_VERSION, Manifest, ShardInfo, load_manifest

SHA = "ab" * 32


def make_manifest():
    shards = {fmt: tuple(ShardInfo(f"train-{i:06d}.{fmt}", n, 1000 + i, SHA) for i, n in
                         enumerate((4, 4, 2)))
              for fmt in ("tar", "parquet")}
    return Manifest(dataset="fashion-mnist", split="train", num_samples=10, image_shape=(28, 28, 1),
                    encoding="npy", classes=("a", "b"), label_counts=(6, 4), shards=shards,
                    source={"synthetic": True, "seed": 0, "files": {"x.gz": SHA}})


def good_dict():
    return json.loads(make_manifest().to_json())


def test_round_trip_and_properties():
    m = make_manifest()
    text = m.to_json()
    back = Manifest.from_json(text, "somewhere/manifest.json")
    assert back == m
    assert back.to_json() == text
    assert m.formats == ("tar", "parquet")
    assert m.shard_sizes.dtype == np.int64 and list(m.shard_sizes) == [4, 4, 2]
    assert list(m.offsets) == [0, 4, 8, 10]
    assert m.synthetic is True and m.image_dtype == "uint8" and m.num_shards == 3


def test_to_json_is_deterministic_and_ordered():
    text = make_manifest().to_json()
    assert text == make_manifest().to_json()
    assert text.endswith("}\n") and "\n  \"dataset\"" in text  # indent 2, trailing newline
    d = json.loads(text)
    assert list(d) == ["format_version", "dataset", "split", "num_samples", "image", "classes",
                       "label_counts", "shards", "source", "created_by"]
    assert d["image"] == {"shape": [28, 28, 1], "dtype": "uint8", "encoding": "npy"}
    assert d["shards"]["tar"][2] == {"name": "train-000002.tar", "num_samples": 2, "bytes": 1002,
                                     "sha256": SHA}
    assert d["created_by"] == f"shardstream {__version__}"
    assert d["format_version"] == FORMAT_VERSION
    # source keys are written sorted, whatever order they were given in
    m = make_manifest()
    shuffled = Manifest(**{**m.__dict__, "source": {"seed": 0, "files": {"x.gz": SHA},
                                                    "synthetic": True}})
    assert shuffled.to_json() == text


def _mutate(path, value):
    """A copy of the good manifest dict with ``path`` (tuple of keys) set to ``value``
    (``DELETE`` removes it)."""
    d = copy.deepcopy(good_dict())
    target = d
    for k in path[:-1]:
        target = target[k]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(d)


DELETE = object()

BAD = [
    # (path, value, expected message part)
    (("format_version",), 2, "unknown format_version 2 (this shardstream reads version 1)"),
    (("format_version",), "1", "field 'format_version' must be an integer"),
    (("dataset",), DELETE, "field 'dataset' is missing"),
    (("split",), DELETE, "field 'split' is missing"),
    (("num_samples",), DELETE, "field 'num_samples' is missing"),
    (("image",), DELETE, "field 'image' is missing"),
    (("classes",), DELETE, "field 'classes' is missing"),
    (("shards",), DELETE, "field 'shards' is missing"),
    (("source",), DELETE, "field 'source' is missing"),
    (("shards", "tar", 1, "sha256"), DELETE, "field 'shards.tar[1].sha256' is missing"),
    (("num_samples",), -10, "field 'num_samples' must not be negative, got -10"),
    (("num_samples",), True, "field 'num_samples' must be an integer, got True"),
    (("num_samples",), 11, "field 'label_counts' add up to 10, but num_samples is 11"),
    (("label_counts",), [7, 4], "field 'label_counts' add up to 11, but num_samples is 10"),
    (("label_counts",), [-1, 11], "field 'label_counts[0]' must not be negative"),
    (("label_counts",), [10], "field 'label_counts' has 1 entries for 2 classes"),
    (("shards", "tar", 0, "num_samples"), -4, "field 'shards.tar[0].num_samples' must not be "
                                              "negative"),
    (("shards", "tar", 0, "num_samples"), 5, "field 'shards.tar' hold 11 samples in all, but "
                                             "num_samples is 10"),
    (("shards", "tar", 2, "bytes"), -1, "field 'shards.tar[2].bytes' must not be negative"),
    (("shards", "parquet", 0, "sha256"), "xyz", "field 'shards.parquet[0].sha256' must be 64 "
                                                "lowercase hex digits, got 'xyz'"),
    (("shards", "parquet", 0, "sha256"), "AB" * 32, "must be 64 lowercase hex digits"),
    (("shards", "tar", 0, "name"), "../train-000000.tar", "field 'shards.tar[0].name' must be a "
                                                          "plain file name"),
    (("shards", "tar", 0, "name"), "sub/train-000000.tar", "field 'shards.tar[0].name' must be "
                                                           "a plain file name"),
    (("shards", "tar", 0, "name"), "train..x.tar", "must be a plain file name"),
    (("shards", "tar", 0, "name"), "train-000000.parquet", "does not end in .tar"),
    (("shards", "tar", 1, "name"), "train-000000.tar", "'train-000000.tar' is listed twice"),
    (("shards", "zip"), [], "unknown shard format 'zip'"),
    (("shards",), {}, "field 'shards' lists no shard format"),
    (("shards", "tar"), [], "field 'shards.tar' must be a non-empty list"),
    (("dataset",), "../etc", "field 'dataset' must be a plain name"),
    (("split",), "a/b", "field 'split' must be a plain name"),
    (("image", "shape"), [28, 28], "field 'image.shape' must be [height, width, channels]"),
    (("image", "shape"), [28, 0, 1], "field 'image.shape' must be [height, width, channels]"),
    (("image", "dtype"), "float32", "field 'image.dtype' must be 'uint8'"),
    (("image", "encoding"), "jpeg", "field 'image.encoding' must be one of npy, png"),
    (("classes",), ["a", "a"], "field 'classes' holds the same class name twice"),
    (("classes",), [], "field 'classes' must be a non-empty list"),
    (("source", "synthetic"), DELETE, "field 'source.synthetic' must be true or false"),
    (("source",), [], "field 'source' must be a JSON object"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{'.'.join(map(str, p))}={v!r}"[:40]
                                                          for p, v, _ in BAD])
def test_validation_errors_name_field_and_manifest(path, value, message):
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(_mutate(path, value), "data/fm/train/manifest.json")
    text = str(info.value)
    assert message in text
    assert "data/fm/train/manifest.json" in text
    assert "\n" not in text


def test_formats_disagreeing_on_counts():
    d = good_dict()
    d["shards"]["parquet"][0]["num_samples"] = 3
    d["shards"]["parquet"][1]["num_samples"] = 5
    with pytest.raises(ManifestError, match=r"'shards.parquet' disagree with shards.tar on the "
                                            r"samples per shard \(at shard 0: 3 vs 4\)"):
        Manifest.from_json(json.dumps(d), "m.json")


def test_png_with_two_channels_rejected():
    d = good_dict()
    d["image"] = {"shape": [4, 4, 2], "dtype": "uint8", "encoding": "png"}
    with pytest.raises(ManifestError, match="png images have 1 .* or 3 .* channels, got 2"):
        Manifest.from_json(json.dumps(d), "m.json")


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not valid JSON"),
    ("", "is not valid JSON"),
    ("[1, 2]", "the top level must be a JSON object, got list"),
    ("null", "the top level must be a JSON object"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    ("[" * 100000 + "]" * 100000, "is not valid JSON"),
])
def test_not_a_manifest(text, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(text, "x/manifest.json")


def test_load_manifest_missing_says_not_finished(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train-000000.tar").write_bytes(b"partial")
    with pytest.raises(ManifestError) as info:
        load_manifest(str(tmp_path / "half"))
    text = str(info.value)
    assert "is not a finished conversion" in text and "shardstream convert" in text
    assert str(tmp_path / "half") in text


def test_load_manifest_names_file_on_damage(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(ManifestError, match=r"manifest .*manifest.json: field 'dataset' is "
                                            r"missing"):
        load_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(make_manifest().to_json())
    assert load_manifest("file://" + str(tmp_path)) == make_manifest()


# ---------------------------------------------------------------------------------------------
# shardstream info


def test_info_table_and_json(make_split, capsys):
    location, manifest, _, labels = make_split(n=30, shard_size=8, shape=(6, 5, 1))
    assert main(["info", location]) == 0
    out = capsys.readouterr().out
    assert "toy / train" in out and "SYNTHETIC" in out
    assert "6x5x1 uint8 (grey), npy encoding" in out
    assert "tar shards      4 x up to 8 samples" in out
    assert "parquet shards  4 x up to 8 samples" in out
    counts = np.bincount(labels, minlength=3)
    for i, name in enumerate(("zero", "one", "two")):
        assert any(line.split()[:3] == [str(i), name, f"{counts[i]:,}"]
                   for line in out.splitlines())
    assert main(["info", location, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_samples"] == 30 and d["synthetic"] is True
    assert d["classes"][1] == {"label": 1, "name": "one", "count": int(counts[1])}
    assert d["shards"]["tar"]["count"] == 4
    assert d["shards"]["parquet"]["bytes"] == sum(s.bytes for s in manifest.shards["parquet"])
    assert d["image"] == {"shape": [6, 5, 1], "dtype": "uint8", "encoding": "npy"}


def test_info_errors(make_split, tmp_path, capsys):
    make_split("a")
    make_split("b")
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a dataset folder, not a split: pass " in err
    assert f"{tmp_path / 'a'} or {tmp_path / 'b'}" in err
    assert main(["info", str(tmp_path / "nothing")]) == 1
    assert "is not a finished conversion" in capsys.readouterr().err


def test_built_from_lists_and_numpy_equals_loaded():
    m = make_manifest()
    loose = Manifest(dataset="fashion-mnist", split="train", num_samples=np.int64(10),
                     image_shape=[np.int64(28), 28, 1], encoding="npy", classes=["a", "b"],
                     label_counts=np.array([6, 4]),
                     shards={"parquet": list(m.shards["parquet"]), "tar": list(m.shards["tar"])},
                     source={"synthetic": True, "seed": 0, "files": {"x.gz": SHA}})
    assert loose == m and loose.to_json() == m.to_json()
    assert loose.formats == ("tar", "parquet")


def test_never_writes_an_invalid_manifest():
    m = make_manifest()
    bad = Manifest(**{**m.__dict__, "label_counts": (5, 4)})
    with pytest.raises(ManifestError, match=r"fashion-mnist/train being written.*'label_counts' "
                                            r"add up to 9, but num_samples is 10"):
        bad.to_json()
    with pytest.raises(ManifestError, match="cannot be written as JSON"):
        Manifest(**{**m.__dict__, "source": {"synthetic": True, "when": object()}}).to_json()
