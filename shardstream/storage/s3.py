"""The S3 backend: ``pyarrow.fs.S3FileSystem``.

Credentials, region and endpoint come from the usual AWS settings (see :mod:`shardstream.config`)
unless ``storage_options`` names them.  pyarrow's own retries are off: shardstream retries.
"""

from __future__ import annotations

from .. import config
from ..errors import InputError
from .clients import cached
from .retry import Denied, Fatal, Missing, Transient, retrying

NAME = "s3"
SCHEMES = ("s3",)
OPTION_KEYS = ("retries", "retry_wait", "timeout", "endpoint_url", "key", "secret",
               "session_token", "region", "anon")
HINT = ("check the bucket and key, the credentials (AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials) and, for S3-compatible "
        "stores, the endpoint (AWS_ENDPOINT_URL or storage_options={'endpoint_url': ...})")
_MISSING = ("NO_SUCH_KEY", "NO_SUCH_BUCKET", "ACCESS_DENIED", "INVALID_ACCESS_KEY_ID",
            "SIGNATURE_DOES_NOT_MATCH", "HTTP response code: 403", "HTTP response code: 404",
            "Forbidden", "UNKNOWN (HTTP status 403)", "UNKNOWN (HTTP status 404)")
_DENIED = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
           "HTTP response code: 403", "Forbidden", "UNKNOWN (HTTP status 403)")


def to_path(location: str) -> str:
    """``bucket/key`` of ``s3://bucket/key``."""
    path = location[len("s3://"):].strip("/")
    if not path:
        raise InputError(f"location {location!r} names no bucket; write s3://bucket/prefix")
    return path


def settings(storage_options=None) -> dict:
    """The ``pyarrow.fs.S3FileSystem`` keyword arguments shardstream uses for these options.

    The endpoint comes from ``endpoint_url``, else ``AWS_ENDPOINT_URL_S3``, else
    ``AWS_ENDPOINT_URL``, else ``endpoint_url`` in the active ``~/.aws/config`` profile
    (pyarrow itself reads none of these).  Credentials and region not given here are found
    by the AWS SDK the usual way.
    """
    opts = dict(storage_options or {})
    kw = {}
    endpoint = opts.get("endpoint_url") or config.s3_endpoint()
    if endpoint:
        kw["endpoint_override"] = endpoint
    for ours, theirs in (("key", "access_key"), ("secret", "secret_key"),
                         ("session_token", "session_token"), ("region", "region")):
        if opts.get(ours):
            kw[theirs] = opts[ours]
    if "region" not in kw:
        region = config.s3_region()
        if region:
            kw["region"] = region
        elif endpoint:
            kw["region"] = "us-east-1"   # S3-compatible stores ignore it; the SDK needs one
    if opts.get("anon"):
        kw["anonymous"] = True
    timeout = float(opts.get("timeout", config.DEFAULT_TIMEOUT))
    kw["connect_timeout"] = min(timeout, 10.0)
    kw["request_timeout"] = timeout
    return kw


def _fs(opts):
    """The ``pyarrow.fs.S3FileSystem`` for these options (one per process)."""
    kw = settings(opts)
    key = ("s3", tuple(sorted((k, str(v)) for k, v in kw.items())))

    def make():
        import pyarrow.fs as pafs  # noqa: PLC0415 - pyarrow's S3 only when s3:// is used

        return pafs.S3FileSystem(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
                                 **kw)

    return cached(key, make)


def classify(exc):
    if isinstance(exc, (Transient, Missing, Fatal)):
        return exc
    if isinstance(exc, FileNotFoundError):
        return Missing("no such object, prefix or bucket")
    text = str(exc)
    if any(marker in text for marker in _DENIED):
        return Denied(text)
    if any(marker in text for marker in _MISSING):
        return Missing(text)
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return Transient(text)
    return Fatal(f"{type(exc).__name__}: {text}")


def _file_type():
    import pyarrow.fs as pafs  # noqa: PLC0415 - loaded already by _fs

    return pafs.FileType


def read(location, path, opts) -> bytes:
    fs = _fs(opts)

    def attempt():
        with fs.open_input_file(path) as f:
            expected = f.size()
            data = f.read()
        if len(data) != expected:
            raise Transient(f"incomplete body: {len(data)} of {expected} bytes")
        return data

    return retrying(location, opts, "reading", attempt, classify, HINT)


def open_raw(location, path, opts):
    """pyarrow's input stream of the object, without retries."""
    return _fs(opts).open_input_stream(path)


def open_read(location, path, opts):
    return retrying(location, opts, "reading", lambda: open_raw(location, path, opts), classify,
                    HINT)


def write(location, path, data, opts) -> None:
    fs = _fs(opts)

    def attempt():
        with fs.open_output_stream(path) as f:
            f.write(data)

    retrying(location, opts, "writing", attempt, classify, HINT)


def size(location, path, opts) -> int:
    fs = _fs(opts)

    def attempt():
        info = fs.get_file_info(path)
        if info.type != _file_type().File:
            raise Missing("no such object")
        return info.size

    return retrying(location, opts, "reading the size of", attempt, classify, HINT)


def exists(location, path, opts) -> bool:
    fs = _fs(opts)

    def attempt():
        try:
            return fs.get_file_info(path).type != _file_type().NotFound
        except OSError as exc:
            if "NO_SUCH_BUCKET" in str(exc):
                return False
            raise

    return retrying(location, opts, "checking", attempt, classify, HINT)


def listdir(location, path, opts) -> list[str]:
    fs = _fs(opts)

    def attempt():
        import pyarrow.fs as pafs  # noqa: PLC0415 - loaded already by _fs

        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=False))
        return sorted(info.base_name for info in infos)

    return retrying(location, opts, "listing", attempt, classify, HINT)


def remove(location, path, opts) -> None:
    fs = _fs(opts)

    def attempt():
        if fs.get_file_info(path).type != _file_type().File:
            raise Missing("no such object")
        fs.delete_file(path)

    retrying(location, opts, "removing", attempt, classify, HINT)
