"""Storage: S3 transport (boto3 clients with bounded retries, verified downloads into a local cache, JSON
documents), folders published to S3 with a checksum manifest, and file checksums.

Nothing here knows about data formats, models, Prefect or MLflow; `alignment/`, `evaluation/`, `tasks/` and
`flows/` build on it.
"""
