"""``shardstream serve``: a converted folder, read-only, over HTTP (user guide: docs/serve.md).

- :mod:`.paths`: request paths, decoded per segment and confined to the root;
- :mod:`.ranges`: ``Range`` / ``If-Range`` and ETags;
- :mod:`.listing`: the index of datasets at ``/`` and folder listings;
- :mod:`.app`: the aiohttp application (:func:`make_app`, :func:`start_app`);
- :mod:`.run`: :func:`serve`, the command's body (signals, banner, access log).
"""

from .app import make_app, start_app
from .run import serve

__all__ = ["make_app", "start_app", "serve"]
