"""The code layout the design card promises: ``import shardstream`` needs neither torch nor
tensorflow, and each framework is imported only inside its adapter module."""

import ast
import pathlib
import subprocess
import sys
import textwrap

PKG = pathlib.Path(__file__).resolve().parents[1] / "shardstream"

ADAPTERS = {"torch": {"loaders/torch_loader.py"}, "tensorflow": {"loaders/tf_loader.py"}}
#: names under which the adapters bind the framework modules (``import tensorflow as tf``)
FRAMEWORK_NAMES = {"torch": "torch", "tf": "tensorflow", "tensorflow": "tensorflow"}


def _imported_roots(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def _imported_framework_names(path):
    """Framework module objects pulled in by name through ``from X import torch / tf`` (any X,
    relative ones too, e.g. ``from .torch_loader import torch``) -> framework roots."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in FRAMEWORK_NAMES:
                    yield FRAMEWORK_NAMES[alias.name]


def test_frameworks_are_imported_only_by_their_adapters():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for root in set(_imported_roots(path)):
            if root in ADAPTERS and rel not in ADAPTERS[root]:
                offenders.append(f"{rel} imports {root}")
        for root in set(_imported_framework_names(path)):
            if rel not in ADAPTERS[root]:
                offenders.append(f"{rel} re-imports the {root} module by name")
    assert offenders == []


def test_plan_and_formats_do_no_framework_or_io_imports():
    # The plan is pure numpy; format code never touches a framework or the network.
    plan_imports = set(_imported_roots(PKG / "loaders" / "plan.py"))
    assert plan_imports <= {"numpy", "dataclasses", "functools", "typing", "__future__", "shardstream",
                            "math", "collections"}, plan_imports
    for name in ("tarshard.py", "parquetshard.py", "formats.py", "manifest.py"):
        roots = set(_imported_roots(PKG / "shards" / name))
        assert not roots & {"torch", "tensorflow", "fsspec", "aiohttp", "urllib", "requests"}, (name, roots)


def test_import_shardstream_without_torch_or_tensorflow(tmp_path):
    # Block both frameworks at import time, then use everything that is not an adapter.
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'tensorflow'):
                    raise ImportError('blocked for this test: ' + name)
        sys.meta_path.insert(0, Block())
        import shardstream
        import shardstream.cli
        from shardstream.loaders import plan, resize, execute
        from shardstream.shards import manifest, formats, storage, cache, verify
        from shardstream.converters import convert, synth, idx
        ids = shardstream.plan_epoch([3, 4], batch_size=2, seed=0).ids
        assert sorted(ids.tolist()) == list(range(7))
        try:
            shardstream.torch_loader
        except ImportError as exc:
            print('torch adapter needs torch:', exc)
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
