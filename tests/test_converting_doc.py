"""docs/converting.md's CIFAR and "shards other tools wrote" sections run as written (issue 15
item 6): their ```python blocks (in one namespace) and the ``shardstream`` lines of their ```sh
blocks, in document order, in an empty temporary folder, offline.

Budget: ~10 s.
"""

import pathlib
import re
import shlex

import numpy as np

from shardstream import cli
from shardstream.shards.manifest import load_manifest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "converting.md"
SECTIONS = ("## CIFAR-10 and CIFAR-100", "## Shards other tools wrote")


def _blocks():
    """[(lang, code)] of the runnable sections, in order."""
    out = []
    for section in re.split(r"^(?=## )", DOC.read_text(), flags=re.M):
        if section.startswith(SECTIONS):
            out += re.findall(r"^```(sh|python)\n(.*?)^```", section, flags=re.S | re.M)
    return out


def test_sections_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["sh", "python", "sh"]
    namespace = {"__name__": "__converting_md__"}
    ran = []
    for i, (lang, code) in enumerate(blocks):
        if lang == "python":
            exec(compile(code, f"docs/converting.md block {i + 1}", "exec"), namespace)
            continue
        for line in code.splitlines():
            if line.startswith("shardstream "):
                argv = shlex.split(line.split("#")[0])
                assert cli.main(argv[1:]) == 0, line
                ran.append(argv[1:3])
    assert ["convert", "cifar-100"] in ran and ["convert", "parquet"] in ran
    assert load_manifest("shards/cifar-10/train").num_samples == 1000
    assert len(load_manifest("shards/cifar-100-coarse/test").classes) == 20
    assert (tmp_path / "cifar.png").exists()
    theirs = load_manifest("shards/theirs/train")
    assert theirs.classes == ("cat", "dog", "owl") and theirs.num_samples == 50
    pets = load_manifest("shards/pets/train")
    assert pets.image_shape == (16, 16, 3) and pets.classes == ("cat", "dog", "owl")
    assert pets.source["resized"] == 50
    assert np.array_equal(pets.label_counts, [17, 17, 16])
    assert "cifar-100" in capsys.readouterr().out
