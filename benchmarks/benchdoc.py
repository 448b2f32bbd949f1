"""What every benchmark script shares: the machine's description and the writing of one
section of docs/benchmarks.md (the others are left alone)."""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model (from lscpu) and the number of cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def write_section(section: str, text: str) -> None:
    """Replace section ``section`` ("## Title") of docs/benchmarks.md with ``text`` (which starts
    with that heading); append it when the page has no such section."""
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if section in doc:
        start = doc.index(section)
        nxt = doc.find("\n## ", start + len(section))
        end = len(doc) if nxt < 0 else nxt + 1
        doc = doc[:start] + text.rstrip() + "\n\n" + doc[end:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip() + "\n"
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(doc)
    os.replace(tmp, DOC)
