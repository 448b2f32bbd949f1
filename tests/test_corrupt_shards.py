"""Corrupted shards and manifests (issue 7, item 1) and `shardstream verify` (issue 2, item 8):
every kind of damage is a clear error naming the shard and the problem, raised before a wrong
batch is produced."""

import dataclasses
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest

from shardstream import shards
from shardstream.cli import main
from shardstream.errors import ManifestError, ShardError
from shardstream.shards.manifest import load_manifest
from shardstream.shards.tarshard import read_tar
from shardstream.shards.verify import verify

SHAPE = (6, 5, 1)


def shard_bytes(location, manifest, fmt, index):
    with open(os.path.join(location, manifest.shards[fmt][index].name), "rb") as f:
        return f.read()


def member_ranges(raw):
    """[(name, start, end)] byte range of every tar member (header + padded data)."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    ends = [m.offset for m in members[1:]]
    last = members[-1]
    ends.append(last.offset_data + (last.size + 511) // 512 * 512)
    return [(m.name, m.offset, e) for m, e in zip(members, ends)]


def end_of_members(raw):
    return member_ranges(raw)[-1][2]


def read(fmt, data, manifest, index=0):
    return shards.read_shard(fmt, data, manifest, index)


@pytest.fixture
def tar_split(make_split):
    return make_split(n=20, shard_size=8, shape=SHAPE, encoding="npy", formats=("tar",))


# ---------------------------------------------------------------------------------------------
# tar


@pytest.mark.parametrize("member,into,problem", [
    (0, 100, "a partial header"), (5, 300, "a partial header"),
    (1, 600, "member 000000000.npy needs"), (7, 530, "member 000000003.npy needs"),
    (0, 515, "the file ends inside the padding after 000000000.cls"),
    (15, 700, "the file ends inside the padding after 000000007.npy"),
])
def test_truncated_tar(tar_split, member, into, problem):
    """Cut inside a header (into < 512), inside a member's data, or inside its padding."""
    location, manifest, _, _ = tar_split
    raw = shard_bytes(location, manifest, "tar", 0)
    name, start, end = member_ranges(raw)[member]
    assert start + into < end
    with pytest.raises(ShardError, match=r"^train-000000.tar: truncated: ") as info:
        read("tar", raw[:start + into], manifest)
    assert problem in str(info.value)
    assert "re-create or re-download" in str(info.value)


def test_tar_member_missing(tar_split):
    location, manifest, _, _ = tar_split
    raw = shard_bytes(location, manifest, "tar", 1)
    ranges = {name: (a, b) for name, a, b in member_ranges(raw)}
    a, b = ranges["000000011.npy"]
    with pytest.raises(ShardError, match=r"^train-000001.tar: member 000000011.npy missing after "
                                         r"000000011.cls \(found 000000012.cls instead\)"):
        read("tar", raw[:a] + raw[b:], manifest, 1)
    a, _ = ranges["000000011.cls"]
    with pytest.raises(ShardError, match=r"member 000000011.cls missing after 000000010.npy "
                                         r"\(found 000000012.cls instead\)"):
        read("tar", raw[:a] + raw[b:], manifest, 1)


def test_tar_members_out_of_order(tar_split):
    location, manifest, _, _ = tar_split
    raw = shard_bytes(location, manifest, "tar", 0)
    r = {name: (a, b) for name, a, b in member_ranges(raw)}
    s2 = raw[r["000000002.cls"][0]:r["000000002.npy"][1]]
    s3 = raw[r["000000003.cls"][0]:r["000000003.npy"][1]]
    swapped = raw[:r["000000002.cls"][0]] + s3 + s2 + raw[r["000000003.npy"][1]:]
    with pytest.raises(ShardError, match=r"member 000000002.cls missing after 000000001.npy "
                                         r"\(found 000000003.cls instead\)"):
        read("tar", swapped, manifest)
    # image before label within a sample
    c, n = raw[slice(*r["000000005.cls"])], raw[slice(*r["000000005.npy"])]
    swapped = raw[:r["000000005.cls"][0]] + n + c + raw[r["000000005.npy"][1]:]
    with pytest.raises(ShardError, match=r"member 000000005.cls missing after 000000004.npy "
                                         r"\(found 000000005.npy instead\)"):
        read("tar", swapped, manifest)


def test_tar_wrong_sample_count(tar_split):
    location, manifest, images, labels = tar_split
    raw = shard_bytes(location, manifest, "tar", 0)
    # fewer samples: the archive ends (properly) after sample 5
    short = raw[:member_ranges(raw)[11][2]] + bytes(1024)
    with pytest.raises(ShardError, match=r"member 000000006.cls missing after 000000005.npy "
                                         r"\(the archive ends; 2 of 8 samples missing\)"):
        read("tar", short, manifest)
    # more samples: a 9-sample shard where the manifest expects 8
    buf = io.BytesIO()
    shards.write_shard("tar", buf, 0, images[:9], labels[:9], "npy", manifest.classes)
    with pytest.raises(ShardError, match=r"extra member 000000008.cls after 000000007.npy: the "
                                         r"shard holds more than the manifest's 8 samples"):
        read("tar", buf.getvalue(), manifest)
    # a shard in the wrong place (shard 0's bytes read as shard 1)
    with pytest.raises(ShardError, match=r"^train-000001.tar: member 000000008.cls missing at "
                                         r"the start of the archive \(found 000000000.cls"):
        read("tar", raw, manifest, 1)


def test_tar_header_checksum(tar_split):
    location, manifest, _, _ = tar_split
    raw = bytearray(shard_bytes(location, manifest, "tar", 0))
    name, start, _ = member_ranges(bytes(raw))[9]
    assert name == "000000004.npy"
    raw[start + 110] ^= 0x01  # the mode field of 000000004.npy's header
    with pytest.raises(ShardError, match=rf"the header after 000000004.cls \(offset "
                                         rf"{start}\) has a wrong checksum"):
        read("tar", bytes(raw), manifest)


def _tar(members, fmt=tarfile.USTAR_FORMAT, pax=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            if pax:
                ti.pax_headers = pax
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _npy(a):
    out = io.BytesIO()
    np.save(out, a)
    return out.getvalue()


@pytest.mark.parametrize("members,message", [
    ([("000000000.cls", b"1"), ("000000000.npy", _npy(np.zeros(SHAPE, np.float32)))],
     r"member 000000000.npy holds a float32 array of shape \(6, 5, 1\); expected uint8"),
    ([("000000000.cls", b"1"), ("000000000.npy", _npy(np.zeros((5, 6, 1), np.uint8)))],
     r"member 000000000.npy holds a uint8 array of shape \(5, 6, 1\); expected uint8 \(6, 5, 1\)"),
    ([("000000000.cls", b"1"), ("000000000.npy", _npy(np.zeros(SHAPE, np.uint8))[:-3])],
     r"member 000000000.npy holds 27 data bytes, expected 30"),
    ([("000000000.cls", b"1"), ("000000000.npy", b"\x93NUMPY garbage")],
     r"member 000000000.npy is not a valid .npy array"),
    ([("000000000.cls", b"one"), ("000000000.npy", _npy(np.zeros(SHAPE, np.uint8)))],
     r"member 000000000.cls does not hold a label"),
])
def test_tar_bad_members(members, message):
    with pytest.raises(ShardError, match=message):
        read_tar(_tar(members), "t.tar", 0, 1, SHAPE, "npy")


def test_tar_with_pax_headers_rejected():
    members = [("000000000.cls", b"1"), ("000000000.npy", _npy(np.zeros(SHAPE, np.uint8)))]
    raw = _tar(members, fmt=tarfile.PAX_FORMAT, pax={"comment": "hello"})
    with pytest.raises(ShardError, match=r"^t.tar: PAX extended header at the start of the "
                                         r"archive: shardstream shards are plain ustar"):
        read_tar(raw, "t.tar", 0, 1, SHAPE, "npy")
    # the members themselves are fine: without the PAX header the same shard reads
    x, y = read_tar(_tar(members), "t.tar", 0, 1, SHAPE, "npy")
    assert y.tolist() == [1] and np.array_equal(x, np.zeros((1,) + SHAPE, np.uint8))


def test_tar_png_garbage(make_split):
    location, manifest, _, _ = make_split(n=6, shard_size=6, shape=SHAPE, encoding="png",
                                          formats=("tar",))
    raw = bytearray(shard_bytes(location, manifest, "tar", 0))
    name, a, b = [r for r in member_ranges(bytes(raw)) if r[0] == "000000002.png"][0]
    raw[a + 512 + 20:a + 512 + 40] = bytes(20)  # inside the PNG's first chunk
    with pytest.raises(ShardError, match=r"^train-000000.tar: sample 000000002 is not a readable "
                                         r"PNG"):
        read("tar", bytes(raw), manifest)


def test_labels_outside_the_classes(make_split):
    location, manifest, images, labels = make_split(n=8, shard_size=8, shape=SHAPE,
                                                    formats=("tar", "parquet"))
    for fmt in ("tar", "parquet"):
        buf = io.BytesIO()
        bad = labels.copy()
        bad[3] = 7
        shards.write_shard(fmt, buf, 0, images, bad, "npy", [str(i) for i in range(8)])
        with pytest.raises(ShardError, match=rf"^train-000000.{fmt}: sample 000000003 has label "
                                             rf"7, outside the 3 classes"):
            read(fmt, buf.getvalue(), manifest)


# ---------------------------------------------------------------------------------------------
# parquet


@pytest.fixture(params=["npy", "png"])
def pq_split(make_split, request):
    return make_split(n=20, shard_size=8, shape=SHAPE, encoding=request.param,
                      formats=("parquet",))


def test_truncated_parquet(pq_split):
    location, manifest, _, _ = pq_split
    raw = shard_bytes(location, manifest, "parquet", 0)
    for cut in (0, 4, 100, len(raw) // 2, len(raw) - 9, len(raw) - 1):
        with pytest.raises(ShardError, match=r"^train-000000.parquet: not a readable Parquet file"):
            read("parquet", raw[:cut], manifest)


def test_bit_flipped_parquet_never_gives_wrong_samples(pq_split):
    """Flip one bit at every 3rd byte: each read either raises ShardError naming the shard or
    (a flip in statistics / unused metadata) returns exactly the original samples."""
    location, manifest, _, _ = pq_split
    raw = shard_bytes(location, manifest, "parquet", 1)
    want_x, want_y = read("parquet", raw, manifest, 1)
    errors = 0
    for pos in range(0, len(raw), 3):
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << (pos % 8)
        try:
            x, y = read("parquet", bytes(flipped), manifest, 1)
        except ShardError as exc:
            assert str(exc).startswith("train-000001.parquet: ")
            errors += 1
            continue
        assert np.array_equal(x, want_x) and np.array_equal(y, want_y), pos
    assert errors > len(raw) // 3 // 2  # most flips are detected (page CRCs, structure)


def test_parquet_wrong_count_and_place(pq_split):
    location, manifest, images, labels = pq_split
    raw = shard_bytes(location, manifest, "parquet", 2)  # the short last shard: 4 samples
    with pytest.raises(ShardError, match=r"^train-000001.parquet: holds 4 rows, the manifest says "
                                         r"8 samples"):
        read("parquet", raw, manifest, 1)
    raw0 = shard_bytes(location, manifest, "parquet", 0)
    with pytest.raises(ShardError, match=r"^train-000001.parquet: its metadata says .*'first_id': "
                                         r"0.*the manifest says .*'first_id': 8"):
        read("parquet", raw0, manifest, 1)


def test_parquet_foreign_schema(pq_split):
    import pyarrow as pa
    import pyarrow.parquet as pq

    location, manifest, _, _ = pq_split
    buf = io.BytesIO()
    pq.write_table(pa.table({"img": [b"x"] * 8, "label": list(range(8))}), buf)
    with pytest.raises(ShardError, match=r"has columns \['img', 'label'\], expected \['key', "
                                         r"'image', 'label'\]"):
        read("parquet", buf.getvalue(), manifest)


# ---------------------------------------------------------------------------------------------
# through the loader: the error comes before any batch of the damaged shard


@pytest.mark.parametrize("check, message", [
    # with the shard check (default) the changed file is caught by its size first; without it
    # the tar reader still refuses the shard before a batch of it comes out
    (True, r"train-000002.tar of .* has 19456 bytes, its manifest says 20480: the file changed"),
    (False, r"train-000002.tar: member 000000019.npy missing after 000000019.cls"),
])
def test_loader_raises_before_wrong_batch(make_split, check, message):
    from shardstream.loaders.execute import iter_batches, open_stream
    from shardstream.loaders.plan import plan_epoch

    location, manifest, images, labels = make_split(n=40, shard_size=8, shape=SHAPE,
                                                    formats=("tar",))
    path = os.path.join(location, "train-000002.tar")
    raw = open(path, "rb").read()
    r = {name: (a, b) for name, a, b in member_ranges(raw)}
    a, b = r["000000019.npy"]
    with open(path, "wb") as f:
        f.write(raw[:a] + raw[b:])
    source = open_stream(location, check_shards=check)
    plan = plan_epoch(manifest.shard_sizes, batch_size=4, shuffle=False, shard_shuffle=False)
    seen = 0
    with pytest.raises(ShardError, match=message):
        for k, x, y in iter_batches(source, plan):
            ids = plan.batch(k)
            assert np.array_equal(x, images[ids]) and np.array_equal(y, labels[ids])
            seen += 1
    assert seen <= 4  # at most the batches of shards 0 and 1


@pytest.mark.parametrize("text,message", [
    ("{oops", "is not valid JSON"),
    ('{"format_version": 1, "dataset": "toy"}', "field 'split' is missing"),
    ("FV2", "unknown format_version 2"),
    ("NEG", "field 'num_samples' must not be negative"),
])
def test_loader_bad_manifest(make_split, text, message):
    from shardstream.loaders.execute import open_stream

    location, manifest, _, _ = make_split(n=10, shard_size=5, shape=SHAPE)
    path = os.path.join(location, "manifest.json")
    d = json.loads(open(path).read())
    if text == "FV2":
        d["format_version"] = 2
        text = json.dumps(d)
    elif text == "NEG":
        d["num_samples"] = -10
        text = json.dumps(d)
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(ManifestError, match=message) as info:
        open_stream(location)
    assert path in str(info.value)


# ---------------------------------------------------------------------------------------------
# verify


def _rewrite_manifest(location, manifest):
    with open(os.path.join(location, "manifest.json"), "w") as f:
        f.write(manifest.to_json())


def test_verify_clean_split(make_split, capsys):
    location, manifest, _, _ = make_split(n=20, shard_size=8, shape=SHAPE, encoding="png")
    assert verify(location) == []
    assert main(["verify", location]) == 0
    out = capsys.readouterr().out
    assert f"{location}: OK (20 samples; 3 tar, 3 parquet shards" in out


def test_verify_names_failing_shards(make_split, capsys):
    location, manifest, _, _ = make_split(n=20, shard_size=8, shape=SHAPE)
    tar1 = os.path.join(location, "train-000001.tar")
    raw = bytearray(open(tar1, "rb").read())
    raw[member_ranges(bytes(raw))[3][1] + 512 + 140] ^= 0xFF  # a pixel of sample 9
    open(tar1, "wb").write(bytes(raw))
    os.remove(os.path.join(location, "train-000002.parquet"))
    pq0 = os.path.join(location, "train-000000.parquet")
    open(pq0, "ab").write(b"junk")
    problems = verify(location)
    assert len(problems) == 3
    assert problems[0].startswith("train-000000.parquet: ")
    assert "bytes, the manifest says" in problems[0]
    assert problems[1].startswith("train-000001.tar: sha256 ")
    assert problems[2].startswith("train-000002.parquet: missing")
    assert main(["verify", location]) == 1
    out = capsys.readouterr().out
    assert f"{location}: FAILED, 3 problems:" in out
    for p in problems:
        assert f"  {p}" in out
    assert main(["verify", "-q", location]) == 1
    assert "train-000001.tar: sha256" in capsys.readouterr().out


def test_verify_checks_content_not_just_checksums(make_split):
    """A shard swapped for another valid shard, with a manifest updated to its checksum, is
    still caught by parsing; so are formats that disagree and wrong label counts."""
    location, manifest, images, labels = make_split(n=20, shard_size=8, shape=SHAPE)
    raw0 = open(os.path.join(location, "train-000000.tar"), "rb").read()
    with open(os.path.join(location, "train-000001.tar"), "wb") as f:
        f.write(raw0)
    tar = list(manifest.shards["tar"])
    tar[1] = dataclasses.replace(tar[1], bytes=len(raw0), sha256=hashlib.sha256(raw0).hexdigest())
    _rewrite_manifest(location, dataclasses.replace(manifest, shards={**manifest.shards,
                                                                      "tar": tuple(tar)}))
    assert verify(location) == [
        "train-000001.tar: member 000000008.cls missing at the start of the archive (found "
        "000000000.cls instead); the shard is damaged or was not written by shardstream: run "
        "`shardstream verify` and re-create or re-download it"]


def test_verify_formats_disagree_and_label_counts(make_split, tmp_path):
    location, manifest, images, labels = make_split(n=20, shard_size=8, shape=SHAPE)
    # parquet shard 1 rewritten with other pixels (manifest updated, so checksums match)
    other = images[8:16].copy()
    other[3] ^= 1
    buf = io.BytesIO()
    shards.write_shard("parquet", buf, 8, other, labels[8:16], "npy", manifest.classes)
    data = buf.getvalue()
    open(os.path.join(location, "train-000001.parquet"), "wb").write(data)
    pq = list(manifest.shards["parquet"])
    pq[1] = dataclasses.replace(pq[1], bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    counts = list(manifest.label_counts)
    counts[0] += 1
    counts[1] -= 1
    _rewrite_manifest(location, dataclasses.replace(
        manifest, shards={**manifest.shards, "parquet": tuple(pq)}, label_counts=tuple(counts)))
    problems = verify(location)
    assert problems[0] == ("train-000001.parquet: sample 000000011 differs from train-000001.tar "
                           "(1 samples differ); both formats must hold the same samples")
    assert problems[1].startswith("manifest.json: the shards hold ")
    assert f"label_counts say {counts}" in problems[1]


def test_verify_folder_of_splits(make_split, tmp_path, capsys):
    good, *_ = make_split("fm/train", n=10, shard_size=5, shape=SHAPE)
    bad, *_ = make_split("fm/test", n=10, shard_size=5, shape=SHAPE, split="test")
    os.remove(os.path.join(bad, "test-000001.tar"))
    (tmp_path / "half").mkdir()  # no manifest: not a split, ignored
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: OK" in out
    assert f"{bad}: FAILED, 1 problem:" in out and "test-000001.tar: missing" in out
    assert "1 of 2 splits FAILED" in out
    assert main(["verify", str(tmp_path / "half")]) == 1
    assert "holds no converted split" in capsys.readouterr().err


def test_verify_converted_dataset(fmnist_shards, capsys):
    """The converter's output (npy, tar + parquet) verifies clean, split by split."""
    root = str(fmnist_shards)
    assert main(["verify", "-q", root]) == 0
    assert capsys.readouterr().out == ""
    train = load_manifest(os.path.join(root, "fashion-mnist", "train"))
    assert train.formats == ("tar", "parquet") and train.num_samples == 1000


def test_verify_over_http(make_split, tmp_path, http_serve, capsys):
    location, manifest, _, _ = make_split(n=12, shard_size=5, shape=SHAPE)
    srv = http_serve(tmp_path)
    url = f"{srv.url}/split"
    assert verify(url) == []
    path = os.path.join(location, "train-000001.parquet")
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x10
    open(path, "wb").write(bytes(raw))
    assert main(["verify", url]) == 1
    out = capsys.readouterr().out
    assert f"{url}: FAILED, 1 problem:" in out and "train-000001.parquet: sha256 " in out
    assert main(["info", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["location"] == url
