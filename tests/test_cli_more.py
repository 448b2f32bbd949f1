"""Issue 18 item 6: the command line -- help everywhere, --token on every command that reads a
location (convert from a remote source too), splits found under remote prefixes, "pass
…/train or …/test" for a dataset folder, progress only on a terminal, bench progress,
show -o x.jpg, `shardstream cache` and the first download's notice.

Budget: ~20 s.
"""

import argparse
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_foreign import read_split, rgb_images, write_wds

from shardstream.cli import build_parser, main
from shardstream.errors import ManifestError
from shardstream.shards.manifest import load_manifest


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_has_a_description_and_every_option_a_help():
    commands = _subparsers(build_parser())
    assert "cache" in commands
    for name, p in commands.items():
        assert p.description and len(p.description) > 20, name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    for name in ("info", "verify", "show", "bench", "convert"):
        assert any("--token" in a.option_strings for a in commands[name]._actions), name


def test_convert_from_a_remote_source_with_token(tmp_path, http_serve, capsys):
    images, labels = rgb_images(10, seed=3), np.arange(10) % 3
    write_wds(tmp_path / "src", images, labels)
    srv = http_serve(tmp_path / "src", token="tok")
    out = tmp_path / "out"
    assert main(["convert", "webdataset", srv.url, str(out), "--name", "w", "-q"]) == 1
    err = capsys.readouterr().err
    assert "access denied" in err and "--token" in err and srv.url in err
    assert not out.exists()
    assert main(["convert", "webdataset", srv.url, str(out), "--name", "w", "-q",
                 "--token", "tok", "--retries", "1"]) == 0
    _, got, got_labels = read_split(str(out / "w" / "train"), "tar")
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)


@pytest.fixture(scope="module")
def s3_root(fmnist_shards, s3_server):
    from shardstream.storage.upload import upload

    bucket = s3_server.bucket("cli-more")
    upload(str(fmnist_shards), f"{bucket}/root", progress=False,
           storage_options=s3_server.storage_options)
    return f"{bucket}/root"


def test_verify_and_info_find_splits_under_remote_prefixes(s3_root, s3_server, fmnist_shards,
                                                           shard_server, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    for prefix in (s3_root, f"{s3_root}/fashion-mnist"):
        assert main(["verify", prefix]) == 0
        out = capsys.readouterr().out
        assert f"{s3_root}/fashion-mnist/train: OK (1000 samples" in out
        assert f"{s3_root}/fashion-mnist/test: OK (250 samples" in out
    url = shard_server(str(fmnist_shards))
    assert main(["verify", f"{url}/fashion-mnist"]) == 0
    assert f"{url}/fashion-mnist/test: OK (250 samples" in capsys.readouterr().out
    assert main(["info", f"{url}/fashion-mnist"]) == 1
    err = capsys.readouterr().err
    assert f"pass {url}/fashion-mnist/train or {url}/fashion-mnist/test" in err




def test_a_dataset_folder_says_pass_train_or_test(fmnist_shards, shard_server):
    folder = str(fmnist_shards / "fashion-mnist")
    with pytest.raises(ManifestError) as err:
        load_manifest(folder)
    assert f"pass {folder}/train or {folder}/test" in str(err.value)
    from shardstream import torch_loader  # the loaders get it from load_manifest
    with pytest.raises(ManifestError, match="is a dataset folder, not a split"):
        torch_loader(folder, batch_size=8)
    url = shard_server(str(fmnist_shards))
    with pytest.raises(ManifestError, match=f"pass {url}/fashion-mnist/train or "):
        load_manifest(f"{url}/fashion-mnist")


def test_progress_is_plain_lines_when_not_a_terminal(fmnist_raw, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "shardstream.cli", "convert", "fashion-mnist",
                           str(tmp_path / "out"), "--raw", str(fmnist_raw), "--shard-size",
                           "500"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    assert "fashion-mnist/train: 1,000/1,000 img in" in proc.stderr
    assert "fashion-mnist/test: 250/250 img in" in proc.stderr


def test_progress_bar_draws_on_a_terminal_only():
    from shardstream.units import progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, log = Tty(), io.StringIO()
    for stream in (tty, log):
        with progress_bar(total=3, desc="work", unit="x", file=stream, mininterval=0) as bar:
            bar.update(2)
            bar.update(1)
    assert "\r" in tty.getvalue() and "3/3" in tty.getvalue()
    assert log.getvalue().splitlines()[0] == "work: 3 x to go"
    assert log.getvalue().splitlines()[1].startswith("work: 3/3 x in ")
    quiet = io.StringIO()
    with progress_bar(total=3, desc="work", file=quiet, enabled=False) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_bench_reports_progress(train_split, capsys):
    assert main(["bench", train_split, "--framework", "torch", "--epochs", "2",
                 "--batch-size", "250"]) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [x for x in err if x.startswith("bench: torch batch_size=250 workers=0: epoch")]
    assert [x.split(": epoch ")[1].split()[0] for x in lines] == ["1/2", "2/2"]
    assert all("(1000 samples)" in x for x in lines)


def test_show_writes_jpeg_or_refuses(train_split, tmp_path, capsys):
    assert main(["show", train_split, "-o", str(tmp_path / "b.png")]) == 0
    assert main(["show", train_split, "-o", str(tmp_path / "b.jpg")]) == 0
    png, jpg = Image.open(tmp_path / "b.png"), Image.open(tmp_path / "b.jpg")
    assert (png.format, jpg.format) == ("PNG", "JPEG") and png.size == jpg.size
    diff = np.abs(np.asarray(png.convert("RGB"), np.int16) - np.asarray(jpg, np.int16))
    assert diff.mean() < 3                                  # the same picture, JPEG-coded
    assert main(["show", train_split, "-o", str(tmp_path / "b.gif")]) == 1
    assert "name the file .png, .jpg or .jpeg" in capsys.readouterr().err
    assert not (tmp_path / "b.gif").exists()


def test_cache_command_and_the_first_download_notice(fmnist_shards, shard_server, tmp_path,
                                                     monkeypatch, capsys):
    from shardstream import torch_loader

    cache = tmp_path / "cache"
    monkeypatch.setenv("SHARDSTREAM_CACHE_DIR", str(cache))
    url = shard_server(str(fmnist_shards))
    loc = f"{url}/fashion-mnist/test"
    for _ in range(2):
        for _X, _y in torch_loader(loc, batch_size=64, format="tar"):
            pass
    err = capsys.readouterr().err
    assert err.count("caching remote shards in") == 1 and str(cache) in err
    manifest = load_manifest(loc)
    want = sum(s.bytes for s in manifest.shards["tar"])
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"location  {cache}" in out and "limit     none" in out
    assert f"shards    {len(manifest.shards['tar'])} file(s)" in out
    from shardstream.tools.cache import cache_info
    assert cache_info()["shards"] == {"files": len(manifest.shards["tar"]), "bytes": want}
    assert main(["cache", "--clear"]) == 0
    assert f"deleted {len(manifest.shards['tar'])} cached shard(s)" in capsys.readouterr().out
    assert cache_info()["shards"] == {"files": 0, "bytes": 0}


def test_access_denied_suggests_token(fmnist_shards, http_serve, capsys):
    srv = http_serve(fmnist_shards, token="t0k")
    for argv in (["info", f"{srv.url}/fashion-mnist/train"], ["verify", f"{srv.url}/fashion-mnist"],
                 ["show", f"{srv.url}/fashion-mnist/train", "-o", "never.png"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "access denied (HTTP 401" in err and "pass --token TOKEN" in err, err
    assert main(["verify", f"{srv.url}/fashion-mnist", "--token", "t0k"]) == 0
    assert f"{srv.url}/fashion-mnist/train: OK (1000 samples" in capsys.readouterr().out


def test_http_without_listings_is_asked_for_the_usual_split_names(fmnist_shards, http_serve,
                                                                  monkeypatch):
    from shardstream import storage
    from shardstream.errors import NotFoundError
    from shardstream.shards import find_splits

    srv = http_serve(fmnist_shards)
    base = f"{srv.url}/fashion-mnist"
    assert find_splits(base) == [f"{base}/test", f"{base}/train"]       # by its index page
    asked = []

    def no_listing(location, storage_options=None):
        asked.append(location)
        raise NotFoundError(f"listing {location}: HTTP 404 (no index page)")

    monkeypatch.setattr(storage, "listdir", no_listing)
    assert find_splits(base) == [f"{base}/train", f"{base}/test"]       # by the known names
    assert asked == [base]


def test_cache_clear_keeps_shards_in_use(fmnist_shards, shard_server, tmp_path, monkeypatch,
                                         capsys):
    from shardstream.storage.cache import ShardFetcher
    from shardstream.tools.cache import cache_info

    monkeypatch.setenv("SHARDSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    loc = f"{shard_server(str(fmnist_shards))}/fashion-mnist/test"
    manifest = load_manifest(loc)
    fetcher = ShardFetcher(loc, manifest, "tar")
    held = fetcher.local_file(0)                                  # pinned: in use
    fetcher.local_file(1)
    fetcher.release(1)
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 cached shard(s)" in out and "; 1 in use kept" in out
    assert os.path.exists(held)
    assert cache_info()["shards"] == {"files": 1, "bytes": manifest.shards["tar"][0].bytes}
    fetcher.release(0)
    fetcher.close()
