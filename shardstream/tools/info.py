"""``shardstream verify`` and ``shardstream info``: the command bodies (printing, exit status)."""

from __future__ import annotations

import json
import sys

from .. import storage
from ..errors import ManifestError
from ..shards.manifest import MANIFEST_NAME, Manifest, load_manifest
from ..shards.splits import find_splits, split_hint
from ..shards.verify import verify
from ..units import human_bytes, progress_bar


def _no_splits(location):
    return ManifestError(f"{location} holds no converted split (no "
                         f"{MANIFEST_NAME} there or below it); run `shardstream convert` first, "
                         f"or check the location")


def verify_command(location: str, quiet: bool = False, token: str | None = None,
                   storage_options=None) -> int:
    """``shardstream verify``: verify the split at ``location``, or every split below a local
    folder; prints each problem (naming the shard) and a line per split; returns the exit
    status, 0 when everything matches, 1 otherwise."""
    opts = storage.with_token(location, storage_options, token)
    splits = find_splits(location, opts)
    if not splits:
        raise _no_splits(location)
    manifests = {}
    bad = 0
    for split in splits:
        try:
            manifests[split] = load_manifest(split, opts, use_index=False)
        except ManifestError as exc:
            print(f"{split}: FAILED: {exc}")
            bad += 1
    total = sum(m.num_shards * len(m.formats) for m in manifests.values())
    with progress_bar(total=total, unit="shard", desc="verify", enabled=not quiet,
              file=sys.stderr, leave=False) as bar:
        for split, manifest in manifests.items():
            problems = verify(split, opts, manifest=manifest, bar=bar)
            name = split
            if problems:
                bad += 1
                bar.write(f"{name}: FAILED, {len(problems)} problem"
                          f"{'s' if len(problems) > 1 else ''}:", file=sys.stdout)
                for p in problems:
                    bar.write(f"  {p}", file=sys.stdout)
            elif not quiet:
                size = sum(s.bytes for f in manifest.formats for s in manifest.shards[f])
                bar.write(f"{name}: OK ({manifest.num_samples} samples; "
                          f"{', '.join(f'{len(manifest.shards[f])} {f}' for f in manifest.formats)}"
                          f" shards; {human_bytes(size)} checked)", file=sys.stdout)
    if bad and len(splits) > 1:
        print(f"{bad} of {len(splits)} splits FAILED")
    return 1 if bad else 0


# ---------------------------------------------------------------------------------------------
# info


def info_dict(manifest: Manifest, location: str) -> dict:
    """A summary of the split (what ``shardstream info --json`` prints)."""
    return {
        "location": location,
        "dataset": manifest.dataset,
        "split": manifest.split,
        "num_samples": manifest.num_samples,
        "image": {"shape": list(manifest.image_shape), "dtype": manifest.image_dtype,
                  "encoding": manifest.encoding},
        "classes": [{"label": i, "name": c, "count": manifest.label_counts[i]}
                    for i, c in enumerate(manifest.classes)],
        "shards": {f: {"count": len(manifest.shards[f]),
                       "bytes": sum(s.bytes for s in manifest.shards[f]),
                       "samples_per_shard": max(s.num_samples for s in manifest.shards[f])}
                   for f in manifest.formats},
        "synthetic": manifest.synthetic,
        "source": manifest.source,
        "format_version": manifest.format_version,
    }


def print_info(location: str, as_json: bool = False, token: str | None = None,
               storage_options=None) -> None:
    """``shardstream info``: print a summary of the split at ``location`` — samples, classes
    with counts, shards per format with bytes, encoding, image shape, synthetic or not — as a
    table, or as JSON (:func:`info_dict`)."""
    opts = storage.with_token(location, storage_options, token)
    try:
        manifest = load_manifest(location, opts)
    except ManifestError:
        if split_hint(location, opts):
            raise       # a dataset folder: its error says "pass …/train or …/test"
        splits = find_splits(location, opts)
        if not splits or splits == [location]:
            raise
        raise ManifestError(f"{location} is not a split but holds "
                            f"{len(splits)}: {', '.join(splits)}; run `shardstream info` on "
                            f"one of them") from None
    d = info_dict(manifest, location)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    h, w, c = manifest.image_shape
    rows = [
        ("location", d["location"]),
        ("dataset", f"{manifest.dataset} / {manifest.split}"),
        ("data", "SYNTHETIC stand-in (generated, not the real dataset)" if manifest.synthetic
         else "real (converted from the source files)"),
        ("samples", f"{manifest.num_samples:,}"),
        ("image", f"{h}x{w}x{c} uint8 "
                  f"({'grey' if c == 1 else 'RGB' if c == 3 else f'{c} channels'})"
                  f", {manifest.encoding} encoding"),
    ]
    for f, s in d["shards"].items():
        rows.append((f"{f} shards", f"{s['count']} x up to {s['samples_per_shard']:,} samples, "
                                    f"{human_bytes(s['bytes'])}"))
    rows.append(("classes", str(len(manifest.classes))))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    name_w = max(len(cn) for cn in manifest.classes)
    for i, (cn, n) in enumerate(zip(manifest.classes, manifest.label_counts)):
        share = 100.0 * n / manifest.num_samples if manifest.num_samples else 0.0
        print(f"{'':<{width}}  {i:>3}  {cn:<{name_w}}  {n:>10,}  {share:5.1f}%")
    files = manifest.source.get("files")
    if isinstance(files, dict) and files:
        print(f"{'source':<{width}}  " + ", ".join(sorted(files)))
