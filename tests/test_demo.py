"""``shardstream demo --quick``: the README's first command, end to end, offline.

Budget: ~25 s (a 1,500 + 300 image stand-in; torch and tf both imported).
"""

import numpy as np
from PIL import Image

from shardstream import cli


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--quick"]) == 0
    text = capsys.readouterr().out
    assert "identical" in text and "bitwise" in text
    # every place the demo says it wrote to exists and holds what it says
    for split, n in (("train", 1500), ("test", 300)):
        manifest = out / "shards" / "fashion-mnist" / split / "manifest.json"
        assert str(out / "shards") in text and manifest.exists()
        from shardstream.shards.manifest import load_manifest

        m = load_manifest(str(manifest.parent))
        assert m.num_samples == n and m.synthetic and set(m.formats) == {"tar", "parquet"}
    picture = out / "batch.png"
    assert str(picture) in text
    with Image.open(picture) as im:
        assert im.width == 8 * 150
        assert np.asarray(im.convert("L")).std() > 20
    # the timing table: our two loaders and the book's two pipelines, seconds per epoch
    # each row: seconds per epoch, then that time over the torch loader's ("vs ours")
    seconds, ratios = {}, {}
    for name in ("shardstream torch_loader", "shardstream tf_dataset", "book torch",
                 "book tf.data"):
        line = next(line for line in text.splitlines() if name in line)
        before, after = line.split(" s ", 1)
        seconds[name] = float(before.split()[-1])
        ratios[name] = float(after.split()[0].rstrip("x"))
    ours = seconds["shardstream torch_loader"]
    assert ours > 0 and ratios["shardstream torch_loader"] == 1.0
    for name in seconds:    # printed with 2 and 1 decimals: agree within the rounding
        assert abs(ratios[name] - seconds[name] / ours) <= 0.05 + 0.005 * ratios[name] / ours
    assert "extrapolated" in text


def test_demo_result_and_rerun(tmp_path, capsys):
    from shardstream.tools.demo import demo

    first = demo(out=str(tmp_path / "d"), quick=True)
    assert first["identical_batches"] == 24                       # ceil(1500 / 64)
    shard = tmp_path / "d" / "shards" / "fashion-mnist" / "train" / "train-000000.tar"
    before = shard.read_bytes()
    again = demo(out=str(tmp_path / "d"), quick=True)              # re-running is fine
    assert shard.read_bytes() == before                          # deterministic
    assert again["identical_batches"] == 24
    capsys.readouterr()
