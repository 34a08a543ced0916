"""Stage outputs in S3, so a stage can run on another machine: folders are published under
`s3://<bucket>/stages/<stage>-<key>/…` (content-keyed, so immutable once complete) and materialised into a
local cache on the machine that needs them.

A published folder carries `_MANIFEST.json` (relative path, size, SHA-256 of every file), written after
all files: a folder without it is incomplete and is published again. Materialising checks every file
against the manifest.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from storage.checksums import file_sha256
from storage.s3 import default_cache_dir, is_s3_uri, make_client, parse_s3_uri, read_json, write_json

MANIFEST = "_MANIFEST.json"


def bucket() -> str:
    return os.environ.get("ALIGNFLOW_S3_BUCKET", "alignflow")


def read_manifest(client: Any, uri: str) -> dict[str, Any] | None:
    return read_json(uri.rstrip("/") + "/" + MANIFEST, client)


def publish_dir(local: str | Path, uri: str, client: Any = None) -> str:
    """Upload every file under `local` to the prefix `uri` (skipped when already complete there)."""
    client = client or make_client()
    if read_manifest(client, uri) is not None:
        return uri
    root = Path(local)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp"))
    manifest = {"files": {}}
    b, prefix = parse_s3_uri(uri.rstrip("/"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        client.upload_file(str(path), b, f"{prefix}/{rel}")
        manifest["files"][rel] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    client.put_object(Bucket=b, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(manifest).encode())
    return uri


def materialize(path_or_uri: str, client: Any = None, cache_dir: Path | None = None) -> str:
    """A local path for a local path or a published s3:// folder (downloaded once into the cache)."""
    if not is_s3_uri(path_or_uri):
        return path_or_uri
    b, prefix = parse_s3_uri(path_or_uri.rstrip("/"))
    target = (cache_dir or default_cache_dir()) / "stages" / b / prefix
    return str(download_published(path_or_uri, target, client))


def download_published(uri: str, target: Path, client: Any = None) -> Path:
    """Download a published folder into `target`, each file checked against the manifest (files already
    there and matching are kept)."""
    client = client or make_client()
    manifest = read_manifest(client, uri)
    if manifest is None:
        raise FileNotFoundError(f"{uri} is not a complete published folder (no {MANIFEST})")
    b, prefix = parse_s3_uri(uri.rstrip("/"))
    for rel, meta in manifest["files"].items():
        dest = target / rel
        if dest.is_file() and dest.stat().st_size == meta["size"] and file_sha256(dest) == meta["sha256"]:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        client.download_file(b, f"{prefix}/{rel}", tmp)
        if file_sha256(Path(tmp)) != meta["sha256"]:
            os.unlink(tmp)
            raise OSError(f"{uri}/{rel}: checksum mismatch after download")
        os.replace(tmp, dest)
    return target


put_json = write_json  # stage result records (flows/training.py writes, tasks/stages.py reads)
get_json = read_json
