"""Bounded retries with exponential back-off, and the three ways a remote attempt can fail.

A backend's ``classify(exc)`` maps whatever its client raised to :class:`Transient` (retried),
:class:`Missing` (not found / access denied: :class:`NotFoundError` at once) or :class:`Fatal`
(:class:`StorageError` at once); :func:`retrying` runs the attempts.
"""

from __future__ import annotations

import random
import time

from .. import config
from ..errors import AccessError, InputError, NotFoundError, StorageError


class Transient(Exception):
    """A failure worth retrying (wraps the cause)."""


class Missing(Exception):
    """Not found / access denied: never retried."""


class Denied(Missing):
    """Access denied (HTTP 401/403, S3 AccessDenied): :class:`AccessError` at once."""


class Fatal(Exception):
    """Any other failure: not retried."""


def retrying(location, opts: dict, what: str, attempt_fn, classify, hint: str):
    """``attempt_fn()``, retried on transient failures at most ``opts["retries"]`` times.

    Waits ``retry_wait * 2**attempt`` seconds (capped at ``config.MAX_RETRY_WAIT``, jittered
    ×0.5–1.5) between attempts.  Errors name ``location`` and end with ``hint``.
    """
    retries = opts.get("retries", config.DEFAULT_RETRIES)
    wait = float(opts.get("retry_wait", config.DEFAULT_RETRY_WAIT))
    last = None
    for attempt in range(retries + 1):
        try:
            return attempt_fn()
        except (InputError, StorageError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, never swallowed
            cls = classify(exc)
            if isinstance(cls, Denied):
                raise AccessError(f"{what} {location}: access denied ({cls}); the location "
                                  f"needs a token or credentials it was not given (or they "
                                  f"are wrong); {hint}") from exc
            if isinstance(cls, Missing):
                raise NotFoundError(f"{what} {location}: not found or access denied "
                                    f"({cls}); {hint}") from exc
            if isinstance(cls, Fatal):
                raise StorageError(f"{what} {location} failed: {cls}; {hint}") from exc
            last = cls
        if attempt < retries:
            time.sleep(min(config.MAX_RETRY_WAIT, wait * 2 ** attempt) * random.uniform(0.5, 1.5))
    raise StorageError(f"{what} {location} failed after {retries + 1} attempt(s); last "
                       f"error: {last}. Check the network and the endpoint; raise the retry "
                       f"count with storage_options={{'retries': n}} if the link is flaky")
