"""Errors raised by shardstream.

Every message names the file, shard, URL or argument concerned and says what is wrong and,
where there is one, what to do next.  The command line prints ``error: <message>`` for any
:class:`ShardstreamError` and exits with status 1.
"""


class ShardstreamError(Exception):
    """Base class of every error shardstream raises on purpose."""


class InputError(ShardstreamError, ValueError):
    """Bad raw input data or a bad argument."""


class ManifestError(ShardstreamError):
    """A manifest is missing, unreadable or inconsistent."""


class ShardError(ShardstreamError):
    """A shard's bytes do not match what its manifest promises."""


class StorageError(ShardstreamError, OSError):
    """Reading or writing a location failed."""


class NotFoundError(StorageError):
    """A location does not exist (or access to it was denied)."""


class ServiceError(ShardstreamError):
    """The batch service could not deliver: every server failed, or they refused the request."""


class AccessError(NotFoundError):
    """Access to a location was denied (HTTP 401/403, S3 AccessDenied / bad credentials): the
    location may well exist; the token or credentials are wrong or missing."""
