"""The README's examples run as written.

Every ```python block runs, in order and in one namespace (as a reader would paste them), in a
temporary folder holding ``shards/fashion-mnist/{train,test}`` (the small stand-in). The cheap
``shardstream`` commands of the ```sh blocks run too, through the command-line entry point.
The set-up commands and the slow commands (full-size synth/convert, demo, bench, serve, upload)
are exercised by their own tests. Budget: ~20 s.
"""

import os
import pathlib
import re
import shlex

import pytest

from shardstream import cli

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
CHEAP = {"info", "verify", "datasets", "show"}


def _blocks(lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


@pytest.fixture()
def in_readme_folder(fmnist_shards, tmp_path, monkeypatch):
    (tmp_path / "shards").symlink_to(fmnist_shards, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_two_setup_commands_are_the_ci_commands():
    sh = _blocks("sh")
    assert sh[0].strip() == ("python3 -m venv .venv && . .venv/bin/activate && "
                             "pip install -e '.[torch,tf,test]' && shardstream demo")
    assert sh[1].strip() == "python -m pytest -q"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "pip install -e '.[torch,tf,test]'" in ci and "python -m pytest -q" in ci


def test_python_examples_run(in_readme_folder):
    blocks = _blocks("python")
    assert len(blocks) >= 6
    namespace = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    assert (in_readme_folder / "visualize.png").exists()


def test_cheap_commands_run(in_readme_folder, capsys):
    commands = [shlex.split(line.split("#")[0]) for block in _blocks("sh")
                for line in block.splitlines() if line.startswith("shardstream ")]
    cheap = [argv for argv in commands if argv[1] in CHEAP]
    assert {argv[1] for argv in cheap} >= {"info", "verify", "show"}
    for argv in cheap:
        assert cli.main(argv[1:]) == 0, argv
    assert (in_readme_folder / "batch.png").exists()
    # the picture in the README is a real one, made by `shardstream show`
    assert (README.parent / "docs" / "batch.png").exists()
    os.remove(in_readme_folder / "batch.png")
