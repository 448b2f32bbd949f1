"""Every environment variable shardstream reads, and the defaults they override, in one place.

==========================  ==================================================================
variable                    meaning
==========================  ==================================================================
``SHARDSTREAM_TOKEN``       bearer token for http(s) shard locations and for ``shardstream
                            serve`` (docs/serve.md, docs/storage.md)
``SHARDSTREAM_CACHE_DIR``   the shard cache folder (default: the user cache folder,
                            ``platformdirs.user_cache_dir("shardstream")``)
``SHARDSTREAM_RAW_DIR``     a folder searched first for raw dataset files (docs/converting.md)
``SHARDSTREAM_DECODE_      the most threads decoding one PNG shard (an integer >= 1; default:
THREADS``                   :func:`usable_cpus`; docs/loaders.md)
``AWS_ENDPOINT_URL_S3``,    the S3 endpoint, else ``endpoint_url`` of the active profile in
``AWS_ENDPOINT_URL``        ``AWS_CONFIG_FILE`` (default ``~/.aws/config``)
``AWS_PROFILE``,            that profile (default ``default``)
``AWS_DEFAULT_PROFILE``
``AWS_REGION``,             the S3 region, else ``region`` of the active profile
``AWS_DEFAULT_REGION``
==========================  ==================================================================

AWS credentials themselves (``AWS_ACCESS_KEY_ID`` ...) are read by the AWS SDK inside pyarrow,
not by shardstream.  Nothing here is cached: each function reads the environment when called,
so a variable set after ``import shardstream`` still counts.
"""

from __future__ import annotations

import configparser
import os

from .errors import InputError

TOKEN_ENV = "SHARDSTREAM_TOKEN"
CACHE_DIR_ENV = "SHARDSTREAM_CACHE_DIR"
RAW_DIR_ENV = "SHARDSTREAM_RAW_DIR"
DECODE_THREADS_ENV = "SHARDSTREAM_DECODE_THREADS"
#: cgroup v2's CPU limit of this process's group: "<quota> <period>" or "max <period>"
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"

#: storage defaults (each one a ``storage_options`` key; see docs/storage.md)
DEFAULT_RETRIES = 5
DEFAULT_RETRY_WAIT = 0.25
MAX_RETRY_WAIT = 8.0
DEFAULT_TIMEOUT = 60.0
#: background download threads per shard fetcher
PREFETCH_THREADS = 3


def token() -> str | None:
    """``$SHARDSTREAM_TOKEN``, or None when unset or empty."""
    return os.environ.get(TOKEN_ENV) or None


def cache_dir() -> str:
    """``$SHARDSTREAM_CACHE_DIR`` if set, else the user cache folder (platformdirs)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return os.path.expanduser(env)
    import platformdirs  # noqa: PLC0415 - only needed when the variable is unset

    return platformdirs.user_cache_dir("shardstream")


def raw_dir() -> str | None:
    """``$SHARDSTREAM_RAW_DIR`` (user-expanded), or None."""
    env = os.environ.get(RAW_DIR_ENV)
    return os.path.expanduser(env) if env else None


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask (``os.sched_getaffinity``; every CPU
    where there is none), lowered to the cgroup v2 CPU quota when one is set (rounded up: a
    container limited to 2 CPUs on a 64-core host counts 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_MAX) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 limit readable here
        pass
    return max(1, cpus)


def decode_threads() -> int | None:
    """``$SHARDSTREAM_DECODE_THREADS`` as an integer >= 1, or None when unset or empty;
    :class:`InputError` naming the variable for anything else."""
    env = os.environ.get(DECODE_THREADS_ENV, "").strip()
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise InputError(f"{DECODE_THREADS_ENV}={env!r}: must be an integer >= 1 (the most "
                         f"threads decoding one PNG shard), or unset for one per usable CPU")
    return int(env)


def _aws_profile_setting(name: str) -> str | None:
    """``name`` from the active profile of ``~/.aws/config`` (``AWS_CONFIG_FILE``), or None."""
    path = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except (OSError, configparser.Error):
        return None
    section = profile if profile == "default" else f"profile {profile}"
    if parser.has_option(section, name):
        return parser.get(section, name).strip() or None
    return None


def s3_endpoint() -> str | None:
    """``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else the profile's ``endpoint_url``."""
    return (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or _aws_profile_setting("endpoint_url"))


def s3_region() -> str | None:
    """``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else the profile's ``region``."""
    return (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            or _aws_profile_setting("region"))


def quiet_tensorflow() -> None:
    """Ask TensorFlow (before its import) for warnings only and no oneDNN notice.

    Sets ``TF_CPP_MIN_LOG_LEVEL=1`` and ``TF_ENABLE_ONEDNN_OPTS=0`` unless the user set them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
