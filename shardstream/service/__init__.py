"""The batch service (issue 16; user guide: docs/service.md): servers compute runs of batches,
trainers receive them ready, bitwise the same as the local loaders'.

- :mod:`.wire`: the wire format (a small header + raw little-endian arrays; no pickle);
- :mod:`.request`: what a request may ask for (the checks, the limits, datasets under the root);
- :mod:`.compute`: a request -> its run, with the loaders' own plan / execute / resize;
- :mod:`.app`: the aiohttp server and :func:`serve_batches` (``shardstream serve-batches``);
- :mod:`.fetch`: the client's transport: requests, back-pressure, failover;
- :mod:`.client`: :class:`BatchService`, used by ``torch_loader(..., service=[...])`` and
  ``tf_dataset(..., service=[...])``: runs from many servers, bounded in flight, failover.
"""

from .app import make_batch_app, serve_batches
from .client import BatchService
from .wire import decode_run, new_run

__all__ = ["BatchService", "make_batch_app", "serve_batches", "decode_run", "new_run"]
