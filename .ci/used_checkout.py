"""What a user's checkout holds that the tests must leave alone (issue #16): the local stack in the default
stack directory (.alignflow/stack, as `make demo` leaves it) and the files under runs/.

    python .ci/used_checkout.py snapshot FILE   # record it
    python .ci/used_checkout.py compare FILE    # exit 1, naming every difference, if the tests changed it

Recorded: MLflow runs, experiments and model versions on the stack's tracking server; objects per bucket
in its S3; flow runs, deployments and blocks on its Prefect server; path, size and mtime of every file
under runs/. An idle stack changes none of these by itself.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.stack import BUCKETS, Stack, s3_client  # noqa: E402


def prefect_count(stack: Stack, what: str) -> int:
    req = urllib.request.Request(f"{stack.urls['prefect_api']}/{what}/count", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(json.loads(resp.read()))


def snapshot(root: Path) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    stack = Stack.load(root / ".alignflow" / "stack")
    if not stack.running():
        raise SystemExit(f"no running stack in {stack.dir}: run `make demo` first")
    client = MlflowClient(stack.urls["mlflow"])
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = sorted(r.info.run_id for e in experiments
                  for r in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL, max_results=50000))
    versions = sorted(f"{v.name}/{v.version}" for m in client.search_registered_models()
                      for v in client.search_model_versions(f"name='{m.name}'"))
    s3 = s3_client(stack.client_env())
    objects = {b: sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b)
                         for o in page.get("Contents", [])) for b in BUCKETS}
    files = {str(p.relative_to(root)): [p.stat().st_size, p.stat().st_mtime_ns]
             for p in sorted((root / "runs").rglob("*")) if p.is_file()}
    return {"stack_dir": str(stack.dir), "mlflow_experiments": sorted(e.name for e in experiments),
            "mlflow_runs": runs, "model_versions": versions, "s3_objects": objects,
            "prefect": {w: prefect_count(stack, w) for w in ("flow_runs", "deployments", "block_documents")},
            "runs_files": files}


def differences(before: dict, after: dict) -> list[str]:
    out = []
    for key in before:
        old, new = before[key], after[key]
        if old == new:
            continue
        if isinstance(old, list):
            out.append(f"{key}: +{sorted(set(new) - set(old))[:10]} -{sorted(set(old) - set(new))[:10]}")
        elif key == "s3_objects":
            for b in old:
                added = sorted(set(new[b]) - set(old[b]))
                if added:
                    out.append(f"s3 bucket {b}: {len(added)} objects added, e.g. {added[:5]}")
        elif key == "runs_files":
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            out.append(f"runs/: {len(changed)} files added, changed or removed, e.g. {changed[:5]}")
        else:
            out.append(f"{key}: {old} -> {new}")
    return out


def main(argv: list[str]) -> int:
    action, path = argv
    root = Path.cwd()
    if action == "snapshot":
        Path(path).write_text(json.dumps(snapshot(root)))
        return 0
    before = json.loads(Path(path).read_text())
    diff = differences(before, snapshot(root))
    if diff:
        print(f"the tests changed the checkout's own state (stack {before['stack_dir']}, runs/):", *diff, sep="\n  ")
        return 1
    print(f"unchanged: the stack in {before['stack_dir']} ({len(before['mlflow_runs'])} MLflow runs, "
          f"{sum(map(len, before['s3_objects'].values()))} S3 objects, Prefect {before['prefect']}) and "
          f"{len(before['runs_files'])} files under runs/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
