"""The code layout the design card promises: ``import shardstream`` needs neither torch nor
tensorflow, each framework is imported only inside its adapter module (and the book's
baselines), no import cycle among shardstream's modules, one module per concern of a size a
reader can hold, and the environment read in config.py alone."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "shardstream"

ADAPTERS = {"torch": {"loaders/torch_loader.py", "book/torch_baseline.py"},
            "tensorflow": {"loaders/tf_loader.py", "book/tf_baseline.py"}}
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
    assert plan_imports <= {"numpy", "dataclasses", "functools", "typing", "__future__",
                            "shardstream",
                            "math", "collections"}, plan_imports
    for name in ("tarshard.py", "parquetshard.py", "formats.py", "manifest.py"):
        roots = set(_imported_roots(PKG / "shards" / name))
        banned = {"torch", "tensorflow", "fsspec", "aiohttp", "urllib", "requests"}
        assert not roots & banned, (name, roots)


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
        from shardstream import storage, book, server, tools
        from shardstream.shards import manifest, formats, verify
        from shardstream.storage import cache, upload
        from shardstream.converters import convert, synth, idx
        from shardstream.book import datamodule, show
        from shardstream.tools import bench, demo, info
        from shardstream.service import app, client, compute, fetch, request, wire
        ids = shardstream.plan_epoch([3, 4], batch_size=2, seed=0).ids
        assert sorted(ids.tolist()) == list(range(7))
        try:
            shardstream.torch_loader
        except ImportError as exc:
            print('torch adapter needs torch:', exc)
        print('ok')
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------------------------
# the module graph


def _module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(module, level, name, is_package):
    """Absolute module name of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_edges(module, path):
    """(target module, line, at module level?) of every shardstream import in ``path``: each
    ``import a.b`` / ``from a import b`` names module ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    for stmt in tree.body:              # module level includes if/try blocks at the top
        if isinstance(stmt, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(stmt)}
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module or "", is_package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        for target in targets:
            if target in MODULES and target != module:
                yield target, node.lineno, id(node) in top


def _cycles(graph):
    """Every cycle found by a depth-first search, as lists of module names."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def _graph(module_level_only):
    graph = {}
    for module, path in MODULES.items():
        for target, _, top in import_edges(module, path):
            if top or not module_level_only:
                graph.setdefault(module, set()).add(target)
    return graph


def test_no_import_cycle_among_the_modules():
    assert _cycles(_graph(module_level_only=True)) == []


def test_no_function_level_import_hides_a_cycle():
    # Were every function-level import of a shardstream module moved to the top, there would
    # still be no cycle: none of them is there to break one.  (The lazy public API in
    # shardstream/__init__.py goes through importlib and is not an import statement.)
    assert _cycles(_graph(module_level_only=False)) == []


def test_the_cycle_check_finds_a_cycle():
    # the check itself can fail: a graph with a cycle through three modules
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_modules():
    edges = {t for t, _, _ in import_edges("shardstream.loaders.execute",
                                           MODULES["shardstream.loaders.execute"])}
    assert {"shardstream.storage.cache", "shardstream.shards.manifest",
            "shardstream.loaders.plan", "shardstream.errors"} <= edges
    edges = {t for t, _, _ in import_edges("shardstream.shards", MODULES["shardstream.shards"])}
    assert "shardstream.shards.verify" in edges


# ---------------------------------------------------------------------------------------------
# one room per concern


#: the subpackages and what lives there (docs/architecture.md)
ROOMS = {"converters", "shards", "storage", "loaders", "server", "book", "tools", "service"}


def test_every_module_lives_in_its_room():
    top = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == ROOMS
    loose = {p.name for p in PKG.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "cli.py", "config.py", "errors.py",
                     "units.py"} - ({"__main__.py"} - loose)


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")),
                         ids=lambda p: p.relative_to(PKG).as_posix())
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_environment_is_read_in_config_only():
    readers = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        text = path.read_text()
        if rel != "config.py" and ("os.environ" in text or "getenv(" in text):
            readers.append(rel)
    assert readers == []


def test_subpackages_name_their_public_functions():
    import importlib

    for room in ROOMS - {"tools"}:
        module = importlib.import_module(f"shardstream.{room}")
        assert module.__all__, room
        for name in module.__all__:
            if room == "loaders" and name in ("torch_loader", "tf_dataset", "tf_dataset_fn"):
                continue        # resolved lazily: importing them loads a framework
            assert callable(getattr(module, name)) or name.isupper(), (room, name)
