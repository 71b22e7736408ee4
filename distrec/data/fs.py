"""Where a bundle lives: a local directory or a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``),
opened through ``pyarrow.fs``. Torch-free.

Credentials come from the usual environment of each filesystem (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for
an S3-compatible server; ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS; the Hadoop configuration for
HDFS). They are never logged: :func:`redact` strips any ``user:secret@`` part of a URI before it
appears in a message.

Example::

    fs, root = open_bundle_fs("s3://bucket/bundles/demo")
    fs.open_input_file(root + "/_manifest.json").read()
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pyarrow.fs as pafs

URI_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file")


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` with a scheme ``pyarrow.fs`` opens (a local path is not a URI)."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", path)
    return m is not None and m.group(1).lower() in URI_SCHEMES


def redact(path: str) -> str:
    """``path`` without credentials embedded in the URI (``s3://key:secret@bucket`` -> ``s3://bucket``)."""
    if not is_uri(path):
        return path
    parts = urlsplit(path)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def open_bundle_fs(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path inside it) of a bundle given as a local path or a URI.

    For ``s3://`` an S3-compatible endpoint is taken from ``AWS_ENDPOINT_URL`` (or
    ``AWS_ENDPOINT_URL_S3``) when set, so tests and on-premise object stores need no code change.
    """
    p = os.fspath(path)
    if not is_uri(p):
        return pafs.LocalFileSystem(), os.path.abspath(p)
    scheme = urlsplit(p).scheme.lower()
    if scheme == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        parts = urlsplit(p)
        root = (parts.netloc.rsplit("@", 1)[-1] + parts.path).rstrip("/")
        kw: dict[str, object] = {}
        if endpoint:
            ep = urlsplit(endpoint)
            kw["endpoint_override"] = ep.netloc or endpoint
            kw["scheme"] = ep.scheme or "https"
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region:
            kw["region"] = region
        return pafs.S3FileSystem(**kw), root  # keys: pyarrow reads the AWS_* environment itself
    fs, root = pafs.FileSystem.from_uri(p)
    return fs, root.rstrip("/")


def read_text(fs: pafs.FileSystem, path: str) -> str | None:
    """Contents of ``path`` as text, or None when it does not exist."""
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode()


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def data_files(fs: pafs.FileSystem, d: str) -> list[str]:
    """Parquet files under directory ``d`` (recursive, sorted), skipping Spark's ``_SUCCESS`` /
    ``.crc`` markers and hidden or temporary files."""
    if not is_dir(fs, d):
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(d, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(d) :].lstrip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        if os.path.splitext(rel)[1] in (".crc", ".json", ".tmp"):
            continue
        out.append(info.path)
    return sorted(out)
