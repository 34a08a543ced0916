"""Read data from ``s3://bucket/key`` URIs: download to a local cache (verified), then read locally.

The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``MLFLOW_S3_ENDPOINT_URL`` (unset: AWS), the
credentials from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, profiles),
the region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (default ``us-east-1``).

A URI names one object, or a prefix (every object under it with one of the suffixes the caller asks for,
sorted by key). Objects land in ``<cache>/s3/<bucket>/<key>``; a copy whose size and ETag match the
object is reused. A download goes to a temporary file, is checked (size always; MD5 when the ETag is a
plain MD5, i.e. not multipart or encrypted), and is then renamed into place. Every S3 failure becomes a
one-line :class:`StorageError` naming the URI (the data readers turn it into a ``bad_file`` DataError).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from storage.checksums import file_md5

log = logging.getLogger("alignflow.s3")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL")
Progress = Callable[[str, int, int], None]  # (uri, bytes so far, total bytes)
_PLAIN_MD5 = re.compile(r"[0-9a-f]{32}")
BAD_FILE = "bad_file"  # the reason code, the same as alignment.data's for a file that cannot be read


class StorageError(ValueError):
    """An S3 object or prefix that cannot be listed, downloaded or trusted; names the URI, never a secret."""

    reason = BAD_FILE

    def __init__(self, detail: str, file: str) -> None:
        super().__init__(detail, file)
        self.detail = detail
        self.file = file

    def __str__(self) -> str:
        return f"storage error in {self.file}: {self.reason} — {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.file))


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    size: int
    etag: str  # without quotes

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3_uri(source: str) -> bool:
    return str(source).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b"); the key may be empty (the whole bucket)."""
    if not is_s3_uri(uri):
        raise StorageError("not an s3:// URI", file=uri)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError("s3 URI has no bucket (expected s3://bucket/key)", file=uri)
    return bucket, key


def default_cache_dir() -> Path:
    """``$ALIGNFLOW_CACHE_DIR`` or ``~/.cache/alignflow``."""
    return Path(os.environ.get("ALIGNFLOW_CACHE_DIR") or Path.home() / ".cache" / "alignflow")


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_CLIENT_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_REGION", "AWS_DEFAULT_REGION",
               "ALIGNFLOW_S3_MAX_ATTEMPTS", *ENDPOINT_VARIABLES)


def make_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client configured from the environment (SigV4, bounded retries and timeouts).

    Clients are shared within the process (boto3 clients are thread-safe; building one costs ~0.2 s), keyed by
    a hash of the endpoint and every variable that configures them, so changed credentials get a new one."""
    key = hashlib.sha256(json.dumps([endpoint_url, *(os.environ.get(v) for v in _CLIENT_ENV)]).encode()).hexdigest()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = _new_client(endpoint_url)
        return client


def _new_client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Retries with exponential backoff (botocore "standard": up to 20 s apart) ride out a short outage of
    # the S3 endpoint, e.g. a restart; ALIGNFLOW_S3_MAX_ATTEMPTS tunes how long (default 10 attempts, ~1 min).
    attempts = int(os.environ.get("ALIGNFLOW_S3_MAX_ATTEMPTS", "10"))
    config = Config(signature_version="s3v4", connect_timeout=5, read_timeout=120,
                    retries={"max_attempts": attempts, "mode": "standard"})
    # A fresh session: the default one caches credentials, so changed variables would be ignored.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _s3_error(exc: BaseException, uri: str) -> StorageError:
    """Translate a botocore failure into a one-line StorageError."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        detail = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
    elif isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        detail = f"S3 refused the request: {code}" + (f" ({error['Message']})" if error.get("Message") else "")
    else:
        detail = f"S3 request failed: {exc}"
    return StorageError(detail, file=uri)


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def list_objects(client: Any, uri: str, suffixes: tuple[str, ...] | None = None) -> list[S3Object]:
    """The object a URI names, or else the objects under it as a prefix (sorted by key): those whose names end
    in one of `suffixes`, or every one with `suffixes=None`."""
    bucket, key = parse_s3_uri(uri)
    try:
        head = _head(client, bucket, key) if key and not key.endswith("/") else None
        if head is not None:
            return [head]
        prefix = f"{key.rstrip('/')}/" if key else ""
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"]
                if (suffixes is None or PurePosixPath(name).suffix.lower() in suffixes) and not _hidden(name[len(prefix):]):
                    found.append(S3Object(bucket, name, int(item["Size"]), item["ETag"].strip('"')))
    except _botocore_errors() as exc:
        raise _s3_error(exc, uri) from exc
    if not found:
        kinds = f"{', '.join(suffixes)} " if suffixes else ""
        raise StorageError(f"no such object, and no {kinds}objects under it as a prefix", file=uri)
    return sorted(found, key=lambda o: o.key)


def _head(client: Any, bucket: str, key: str) -> S3Object | None:
    """The object's size and ETag; None when there is no such key (a 404, not any other error)."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        if code in ("403", "Forbidden"):  # HEAD has no body: ask again where S3 says why (bad key, ...)
            client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        raise
    return S3Object(bucket, key, int(head["ContentLength"]), head["ETag"].strip('"'))


def _hidden(relative_key: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(relative_key).parts)


def local_path(cache_dir: Path, obj: S3Object) -> Path:
    """Where an object is cached; refuses keys that would escape the cache folder."""
    parts = PurePosixPath(obj.key).parts
    if not parts or any(part in ("..", ".") for part in parts) or obj.key.startswith("/"):
        raise StorageError("object key is not a safe relative path", file=obj.uri)
    return cache_dir / "s3" / obj.bucket / Path(*parts)


def _meta_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.s3meta.json")


def _is_cached(path: Path, obj: S3Object) -> bool:
    if not path.is_file() or path.stat().st_size != obj.size:
        return False
    try:
        meta = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return False
    return meta == {"uri": obj.uri, "size": obj.size, "etag": obj.etag}


def log_progress(uri: str, done: int, total: int) -> None:
    """Default progress: a log line at every tenth of a download (logger ``alignflow.s3``)."""
    log.info("downloading %s: %d/%d bytes (%.0f%%)", uri, done, total, 100.0 * done / max(total, 1))


class _Tenths:
    """boto3 calls back per chunk from several threads; report only at each new tenth."""

    def __init__(self, obj: S3Object, progress: Progress) -> None:
        self.obj, self.progress, self.done, self.reported = obj, progress, 0, -1
        self.lock = threading.Lock()

    def __call__(self, chunk: int) -> None:
        with self.lock:
            self.done += chunk
            tenth = 10 * self.done // max(self.obj.size, 1)
            if tenth > self.reported:
                self.reported = tenth
                self.progress(self.obj.uri, self.done, self.obj.size)


def download(client: Any, obj: S3Object, target: Path, progress: Progress | None = log_progress) -> Path:
    """Download one object to ``target`` (atomic), verify size and plain-MD5 ETag, record its metadata."""
    if _is_cached(target, obj):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        callback = _Tenths(obj, progress) if progress else None
        try:
            client.download_file(obj.bucket, obj.key, temporary, Callback=callback)
        except _botocore_errors() as exc:
            raise _s3_error(exc, obj.uri) from exc
        _verify(Path(temporary), obj)
        os.replace(temporary, target)
        _meta_path(target).write_text(json.dumps({"uri": obj.uri, "size": obj.size, "etag": obj.etag}))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return target


def _verify(path: Path, obj: S3Object) -> None:
    size = path.stat().st_size
    if size != obj.size:
        raise StorageError(f"download is {size} bytes; the object has {obj.size}", file=obj.uri)
    if _PLAIN_MD5.fullmatch(obj.etag) and file_md5(path) != obj.etag:
        raise StorageError("download does not match the object's ETag (MD5)", file=obj.uri)


def fetch(uri: str, cache_dir: str | os.PathLike[str] | None = None, *, suffixes: tuple[str, ...] | None = None,
          client: Any = None, progress: Progress | None = log_progress) -> list[tuple[str, Path]]:
    """Download an object, or the objects under a prefix (those whose names end in one of `suffixes`; every one
    with None), into the cache; return ``(s3 URI, local path)`` per object."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    client = client if client is not None else make_client()
    objects = list_objects(client, uri, suffixes)
    return [(obj.uri, download(client, obj, local_path(cache, obj), progress)) for obj in objects]


def fetch_folder(uri: str, cache_dir: str | os.PathLike[str] | None = None, *, client: Any = None,
                 progress: Progress | None = log_progress) -> Path:
    """Download every object under the prefix `uri` (a model directory, say) into the cache, each verified
    and reused while unchanged; returns the local folder that mirrors the prefix."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    client = client if client is not None else make_client()
    bucket, key = parse_s3_uri(uri)
    prefix = f"{key.rstrip('/')}/" if key else ""
    try:
        objects = [S3Object(bucket, item["Key"], int(item["Size"]), item["ETag"].strip('"'))
                   for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                   for item in page.get("Contents", []) if not _hidden(item["Key"][len(prefix):])]
    except _botocore_errors() as exc:
        raise _s3_error(exc, uri) from exc
    if not objects:
        raise StorageError("no objects under this prefix", file=uri)
    for obj in objects:
        download(client, obj, local_path(cache, obj), progress)
    return cache / "s3" / bucket / Path(*PurePosixPath(prefix).parts) if prefix else cache / "s3" / bucket


# ---- the run's shared store ------------------------------------------------------------------------------


def s3_configured() -> bool:
    """The run has a bucket of its own (``ALIGNFLOW_S3_BUCKET``) and an S3 endpoint: the local stack or
    production. Then caches that outlive a run live there."""
    return bool(os.environ.get("ALIGNFLOW_S3_BUCKET")) and any(os.environ.get(v) for v in ENDPOINT_VARIABLES)


def read_json(uri: str, client: Any = None) -> Any | None:
    """The JSON document at an ``s3://bucket/key`` URI; None when there is no such key."""
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    try:
        body = (client or make_client()).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return json.loads(body)


def write_json(uri: str, document: Any, client: Any = None) -> None:
    """Store a JSON document at an ``s3://bucket/key`` URI (one PUT: readers see all of it or nothing)."""
    bucket, key = parse_s3_uri(uri)
    (client or make_client()).put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode())


def shared_uri(key: str) -> str | None:
    """``s3://$ALIGNFLOW_S3_BUCKET/<key>`` when the run has S3 (`s3_configured`), else None."""
    return f"s3://{os.environ['ALIGNFLOW_S3_BUCKET']}/{key}" if s3_configured() else None
