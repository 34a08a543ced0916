"""Where Prefect persists the cached stage results: S3 when the run has an S3 endpoint (the local stack or
production), else a folder beside the outputs.

`S3ResultStorage` is a small Prefect storage block on boto3. It holds only the bucket, prefix and endpoint;
credentials come from the environment at use, so no secret is ever saved in Prefect's block store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import LocalFileSystem, WritableFileSystem

from storage.s3 import ENDPOINT_VARIABLES, make_client, s3_configured


class S3ResultStorage(WritableFileSystem):
    _block_type_name = "alignflow S3 result storage"
    _block_type_slug = "alignflow-s3-result-storage"
    _description = "Prefect results in an S3 bucket; credentials from the environment, never stored."

    bucket: str
    prefix: str = "prefect-results"
    endpoint_url: str | None = None

    def _key(self, path: str) -> str:
        return f"{self.prefix.rstrip('/')}/{path.lstrip('/')}"

    def _read(self, path: str) -> bytes:
        client = make_client(self.endpoint_url)
        return client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()

    def _write(self, path: str, content: bytes) -> str:
        make_client(self.endpoint_url).put_object(Bucket=self.bucket, Key=self._key(path), Body=content)
        return path

    # Prefect calls these through its async_dispatch convention (a sync and an `a`-prefixed async twin).
    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self._read, path)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return self._read(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self._write, path, content)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)


_SAVED: dict[tuple[str, str, str], WritableFileSystem] = {}  # (Prefect API, block name) -> block saved this process


def result_storage(output_dir: str) -> WritableFileSystem:
    """The result store for one output folder, saved as a Prefect block (Prefect requires saved blocks);
    saved once per process and API (the block's fields depend only on the folder and the environment)."""
    tag = hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]
    if s3_configured():
        endpoint = next(os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v))
        block: WritableFileSystem = S3ResultStorage(bucket=os.environ["ALIGNFLOW_S3_BUCKET"],
                                                    prefix=f"prefect-results/{tag}", endpoint_url=endpoint)
        name = f"alignflow-s3-results-{tag}"
    else:
        block = LocalFileSystem(basepath=str(Path(output_dir) / ".prefect-results"))
        name = f"alignflow-results-{tag}"
    from prefect.settings import PREFECT_API_URL

    memo = (str(PREFECT_API_URL.value()), name, block.model_dump_json())
    if memo not in _SAVED:
        block.save(name, overwrite=True)
        _SAVED[memo] = block
    return _SAVED[memo]
