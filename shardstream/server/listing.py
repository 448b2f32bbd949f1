"""What the server shows: the index of datasets at ``/`` and folder listings (JSON, HTML)."""

from __future__ import annotations

import asyncio
import html
import os
import stat
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from ..shards.manifest import Manifest
from ..shards.names import MANIFEST_NAME
from ..units import human_bytes
from .paths import inside, is_hidden, url_path

INDEX_TTL = 2.0                 # seconds an index scan is reused (rescanned sooner if root changes)
INDEX_MAX_DEPTH = 4             # root/<dataset>/<split>/manifest.json is depth 2
INDEX_MAX_DIRS = 10_000         # folders looked at per scan, at most
LISTING_MAX_ENTRIES = 10_000    # entries shown per folder listing, at most





# ---------------------------------------------------------------------------------------------
# the index of datasets


def _summary(m: Manifest, parts) -> dict:
    """What the index says about one split."""
    formats = {fmt: {"shards": len(m.shards[fmt]),
                     "bytes": int(sum(s.bytes for s in m.shards[fmt]))}
               for fmt in m.formats}
    return {
        "dataset": m.dataset,
        "split": m.split,
        "path": "/".join(parts),
        "url": url_path(parts) + "/" if parts else "/",
        "num_samples": int(m.num_samples),
        "image_shape": [int(d) for d in m.image_shape],
        "encoding": m.encoding,
        "classes": len(m.classes),
        "synthetic": bool(m.synthetic),
        "formats": formats,
        "bytes": int(sum(f["bytes"] for f in formats.values())),
    }


def read_summary(root: str, parts) -> tuple[dict | None, str | None]:
    """(summary, None) for the manifest in folder ``root/parts``, (None, problem) if it is
    unreadable, (None, None) if there is none."""
    path = os.path.realpath(os.path.join(root, *parts, MANIFEST_NAME))
    if not inside(root, path) or not os.path.isfile(path):
        return None, None
    where = "/".join([*parts, MANIFEST_NAME])
    try:
        with open(path, "rb") as f:
            text = f.read(64 << 20).decode("utf-8")
        return _summary(Manifest.from_json(text, where), parts), None
    except Exception as exc:  # noqa: BLE001 - any broken manifest becomes a listed problem
        return None, f"{where}: {exc}"


def scan_index(root: str) -> dict:
    """Walk ``root`` (not into hidden folders or folder symlinks, at most ``INDEX_MAX_DEPTH``
    deep) and summarise every split found through its manifest.  Blocking."""
    splits, problems = [], []
    queue = [()]
    seen = 0
    while queue and seen < INDEX_MAX_DIRS:
        parts = queue.pop(0)
        seen += 1
        summary, problem = read_summary(root, parts)
        if summary is not None:
            splits.append(summary)
            continue                    # a split's folder holds shards, not more splits
        if problem is not None:
            problems.append({"path": "/".join(parts), "error": problem})
        if len(parts) >= INDEX_MAX_DEPTH:
            continue
        try:
            with os.scandir(os.path.join(root, *parts)) as it:
                names = sorted(e.name for e in it
                               if not is_hidden(e.name) and e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        queue.extend((*parts, n) for n in names)
    splits.sort(key=lambda s: s["path"])
    return {"datasets": splits, "problems": problems}


@dataclass
class IndexCache:
    """The last index scan, reused for ``INDEX_TTL`` seconds unless the root folder changed."""

    root: str
    stamp: tuple = ()
    at: float = -1e9
    value: dict = field(default_factory=dict)
    lock: asyncio.Lock | None = None

    async def get(self) -> dict:
        loop = asyncio.get_running_loop()
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            try:
                st = await loop.run_in_executor(None, os.stat, self.root)
                stamp = (st.st_mtime_ns, st.st_ino)
            except OSError:
                stamp = ()
            if stamp != self.stamp or time.monotonic() - self.at > INDEX_TTL:
                self.value = await loop.run_in_executor(None, scan_index, self.root)
                self.stamp, self.at = stamp, time.monotonic()
            return self.value


# ---------------------------------------------------------------------------------------------
# HTML


_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
          "table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left;"
          "border-bottom:1px solid #ddd}td.n{text-align:right}code{background:#f4f4f4}")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>\n{body}</body></html>\n")


def _splits_table(splits, origin: str) -> str:
    e = html.escape
    rows = []
    for s in splits:
        shards = ", ".join(f"{f['shards']} {e(fmt)}" for fmt, f in s["formats"].items())
        rows.append(
            f"<tr><td><a href=\"{e(s['url'])}\">{e(s['dataset'])}</a></td><td>{e(s['split'])}</td>"
            f"<td class=n>{s['num_samples']:,}</td><td>{shards}</td>"
            f"<td class=n>{human_bytes(s['bytes'])}</td><td>{e(s['encoding'])}</td>"
            f"<td>{'yes' if s['synthetic'] else 'no'}</td>"
            f"<td><code>{e(origin + s['url'].rstrip('/'))}</code></td></tr>")
    return ("<table><tr><th>dataset</th><th>split</th><th>samples</th><th>shards</th>"
            "<th>bytes</th><th>encoding</th><th>synthetic</th><th>location</th></tr>\n"
            + "\n".join(rows) + "</table>\n")


def example_path(index: dict) -> str:
    """URL path of the split used in examples: a training split if there is one."""
    splits = index["datasets"]
    pick = next((s for s in splits if s["split"] == "train"), splits[0])
    return pick["url"].rstrip("/")


def index_html(index: dict, origin: str) -> str:
    e = html.escape
    body = "<h1>shardstream shard server</h1>\n"
    if index["datasets"]:
        example = origin + example_path(index)
        body += _splits_table(index["datasets"], origin)
        body += ("<p>Stream a split: <code>shardstream.torch_loader(&quot;"
                 f"{e(example)}&quot;, batch_size=256)</code> or <code>shardstream.tf_dataset("
                 f"&quot;{e(example)}&quot;, batch_size=256)</code>.</p>\n")
    else:
        body += "<p>No converted datasets (no manifest.json) under this folder.</p>\n"
    for p in index["problems"]:
        body += f"<p>Unreadable manifest: {e(p['error'])}</p>\n"
    body += '<p><a href="/?format=json">this index as JSON</a></p>\n'
    return _page("shardstream", body)


def listing_html(parts, entries, summary, origin: str) -> str:
    e = html.escape
    title = url_path(parts) + "/"
    body = f"<h1>{e('/' + '/'.join(parts) + '/')}</h1>\n"
    if summary is not None:
        body += _splits_table([summary], origin)
    links = ['<li><a href="../">../</a></li>']
    for ent in entries:
        label = ent["name"] + ("/" if ent["folder"] else "")
        size = "" if ent["folder"] else f" ({human_bytes(ent['bytes'])})"
        links.append(f"<li><a href=\"{e(ent['url'])}\">{e(label)}</a>{size}</li>")
    body += "<ul>\n" + "\n".join(links) + "\n</ul>\n"
    return _page(title, body)


def list_folder(root: str, real: str) -> list[dict]:
    """Servable entries of the folder ``real`` (under ``root``): names, relative URLs, sizes.
    Blocking."""
    out = []
    with os.scandir(real) as it:
        for ent in sorted(it, key=lambda x: x.name):
            if len(out) >= LISTING_MAX_ENTRIES:
                break
            if is_hidden(ent.name) or any(ord(c) < 32 or c == "\\" for c in ent.name):
                continue
            try:
                target = os.path.realpath(ent.path)
                if not inside(root, target) or target == root:
                    continue
                st = os.stat(target)
            except (OSError, ValueError):
                continue
            folder = stat.S_ISDIR(st.st_mode)
            if not folder and not stat.S_ISREG(st.st_mode):
                continue
            out.append({"name": ent.name, "folder": folder,
                        "url": quote(ent.name, safe="") + ("/" if folder else ""),
                        "bytes": None if folder else st.st_size})
    return out
