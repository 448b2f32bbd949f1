"""``shardstream bench``: D2L §4.2's timing experiment, and its ``--profile`` breakdown.

Checks what the user reads off the output (rows, sample counts, consistent rates, the parts of
the breakdown), never how fast anything is. Budget: ~10 s on the 1,000-sample stand-in.
"""

import json

import pytest

from shardstream import cli


def _json_rows(capsys, argv):
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_reports_the_clock_it_reads(train_split, monkeypatch):
    # a clock that advances 0.25 s per reading: every epoch takes exactly 0.25 s
    import types

    from shardstream.tools import bench as bench_mod

    ticks = iter(range(10**6))
    monkeypatch.setattr(bench_mod, "time",
                        types.SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks)))
    (row,) = bench_mod.bench(train_split, ["torch"], [300], [0], epochs=3)
    assert row["epochs"] == [0.25, 0.25, 0.25] and row["seconds"] == 0.25
    assert row["samples"] == 1000 and row["samples_per_s"] == 4000.0


def test_bench_rows_for_each_framework_batch_size_and_worker_count(train_split, capsys):
    rows = _json_rows(capsys, ["bench", train_split, "--framework", "torch,tf",
                               "--batch-size", "1,300", "--workers", "0", "--epochs", "2",
                               "--resize", "32", "--json"])
    assert [(r["framework"], r["batch_size"], r["workers"]) for r in rows] == [
        ("torch", 1, 0), ("torch", 300, 0), ("tf", 1, 0), ("tf", 300, 0)]
    for r in rows:
        assert r["samples"] == 1000                     # a whole epoch, every sample once
        assert len(r["epochs"]) == 2 and all(t > 0 for t in r["epochs"])
        assert min(r["epochs"]) <= r["seconds"] <= max(r["epochs"])   # the median
        assert r["samples_per_s"] == pytest.approx(1000 / r["seconds"])
        assert r["resize"] == [32, 32]


def test_bench_table_and_workers(train_split, capsys):
    assert cli.main(["bench", train_split, "--framework", "torch", "--batch-size", "128",
                     "--workers", "0,2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "1000 samples" in out[0]
    assert out[1].split()[:3] == ["framework", "batch", "workers"]
    body = [line.split() for line in out[2:4]]
    assert [row[:3] for row in body] == [["torch", "128", "0"], ["torch", "128", "2"]]


def test_profile_breaks_the_epoch_down(train_split, fmnist_png_shards, capsys):
    png_split = str(fmnist_png_shards / "fashion-mnist" / "train")
    rows = {}
    for name, loc in (("npy", train_split), ("png", png_split)):
        (rows[name],) = _json_rows(capsys, ["bench", loc, "--framework", "torch", "--batch-size",
                                            "64", "--epochs", "1", "--resize", "32", "--profile",
                                            "--json"])
    for r in rows.values():
        parts = [r[k] for k in ("read_s", "decode_s", "gather_s", "resize_s", "handoff_s")]
        assert all(p >= 0 for p in parts)
        assert r["read_s"] > 0 and r["resize_s"] > 0
    # PNG shards must be decoded; npy shards hold the raw uint8 bytes already
    assert rows["png"]["decode_s"] > rows["npy"]["decode_s"]
    assert cli.main(["bench", train_split, "--framework", "torch", "--epochs", "1",
                     "--profile"]) == 0
    out = capsys.readouterr().out
    assert "handoff s" in out and "decode" in out


@pytest.mark.parametrize("argv, message", [
    (["--framework", "jax"], "--framework jax"),
    (["--batch-size", "0"], "--batch-size"),
    (["--workers", "-1"], "--workers"),
    (["--epochs", "0"], "--epochs 0"),
])
def test_bench_bad_arguments(train_split, capsys, argv, message):
    assert cli.main(["bench", train_split, *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_bench_missing_location(tmp_path, capsys):
    assert cli.main(["bench", str(tmp_path / "none"), "--framework", "torch"]) == 1
    assert "none" in capsys.readouterr().err
