"""One feedback round: the arena's votes become preference pairs, the current champion is trained on them, and
the result goes through every gate and the registry like any other run.

`alignflow deploy` registers this flow as `feedback-round/arena-votes`, started by a Prefect automation once N
`alignflow.arena.vote` events arrived within a window (flows/deploy.py). The round only builds a config and calls
the pipeline flow as a subflow:

* **data**: every decided vote so far (arena/export.py: left/right votes become pairs; ties and "both bad" are
  counted, never paired; with `preference.method=kto` the "both bad" votes' answers are undesirable examples and
  the single-answer ratings desirable or undesirable ones, `data.unpaired_path`) written as JSON Lines, to S3 when the stack's S3 is configured (a versioned export
  logged in MLflow, tasks/arena.py) else under the round's folder. `data.source=files`, the export as train;
  the held-out pairs are split from it by prompt hash (`data.heldout_fraction`), so a prompt is never in both.
  A round with fewer than `min_pairs` pairs, or whose split leaves either side empty, is skipped (reported,
  not failed): the next N votes start the next round.
* **model**: the registry's `champion` of `promotion.model_name`, downloaded into the round's folder; it is
  also the reference (no SFT), so the win-rate gate compares the new policy with the champion itself.
* **gates**: the pipeline's own, then the human gate (`promotion.min_human_win_rate`): a version trained a
  minute ago has no arena votes, so with the human gate on it cannot stay champion; the round puts `champion`
  back on the version it trained from and records the human gate on the new version (which keeps
  `candidate`, for people to compare in the arena and `alignflow promote` to decide).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from alignment.config import PipelineConfig

DEPLOYMENT = "arena-votes"


class VotePairs(BaseModel):
    uri: str  # the preference rows (s3:// or a local path)
    counts: dict[str, int]  # arena/export.py: votes, pairs, ties, both_bad, identical, unpaired
    train: int  # pairs on each side of the held-out split by prompt hash
    heldout: int
    unpaired_uri: str | None = None  # "both bad" votes and ratings as unpaired examples, when any (for KTO)


class Champion(BaseModel):
    name: str
    version: str
    path: str  # a transformers folder (model + tokenizer)


def default_arena_db() -> str:
    """$ALIGNFLOW_ARENA_DB, else the local stack's `<stack dir>/arena/arena.db`."""
    from arena.store import sqlite_url
    from flows.stack import Stack

    db = os.environ.get("ALIGNFLOW_ARENA_DB") or str(Stack.load(None).dir / "arena" / "arena.db")
    return db if "://" in db else sqlite_url(db)


def round_dir(config: PipelineConfig, stamp: datetime | None = None) -> Path:
    return Path(config.run.output_dir) / "feedback" / (stamp or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def split_counts(rows: list[dict[str, Any]], config: PipelineConfig) -> tuple[int, int]:
    """(train, held-out) pairs as prepare will split them (alignment/data/prepare.py: prompt hash salted by seed)."""
    from alignment.data import is_heldout

    heldout = sum(is_heldout(r, config.data.heldout_fraction, str(config.run.seed)) for r in rows)
    return len(rows) - heldout, heldout


@task(name="export-votes", cache_policy=NO_CACHE)
def export_pairs(config: PipelineConfig, arena_db: str, out_dir: Path) -> VotePairs:
    from arena.export import preference_rows, to_jsonl, unpaired_rows
    from arena.store import open_store

    store = open_store(arena_db)
    decided = store.decided()
    rows, counts = preference_rows(decided)
    unpaired = unpaired_rows(decided, store.rated())
    counts = {**counts, "unpaired": len(unpaired)}
    train, heldout = split_counts(rows, config)
    if rows and os.environ.get("AWS_ENDPOINT_URL_S3"):  # the stack's S3: a versioned export, logged in MLflow
        from tasks.arena import export_votes
        from tasks.tracking import resolve_tracking

        exported = export_votes(arena_db, tracking_uri=resolve_tracking(config)[0])
        return VotePairs(uri=exported.uri, counts=exported.counts, train=train, heldout=heldout,
                         unpaired_uri=exported.unpaired_uri)
    path = out_dir / "arena" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_jsonl(rows))
    unpaired_path = None
    if unpaired:
        unpaired_path = path.with_name("unpaired.jsonl")
        unpaired_path.write_bytes(to_jsonl(unpaired))
    return VotePairs(uri=str(path), counts=counts, train=train, heldout=heldout,
                     unpaired_uri=str(unpaired_path) if unpaired_path else None)


@task(name="fetch-champion", cache_policy=NO_CACHE)
def fetch_champion(tracking_uri: str, name: str, out_dir: Path) -> Champion:
    """The `champion` version's model and tokenizer, saved as a plain transformers folder under out_dir."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.promotion import PromotionError

    client = MlflowClient(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except mlflow.exceptions.MlflowException:
        raise PromotionError(f"model {name!r} has no champion in {tracking_uri}: a feedback round trains from "
                             "the champion (register one with `alignflow run`, or `alignflow promote`)") from None
    # the version's own artifact location: a `models:/` URI would be resolved in the default registry, not this one
    source = client.get_model_version_download_uri(name, mv.version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(out_dir / "download"),
                                                tracking_uri=tracking_uri)
    parts = mlflow.transformers.load_model(local, return_type="components")
    path = out_dir / "champion"
    parts["model"].save_pretrained(path, safe_serialization=True)
    parts["tokenizer"].save_pretrained(path)
    return Champion(name=name, version=str(mv.version), path=str(path))


def round_config(config: PipelineConfig, pairs: VotePairs, champion: Champion, out_dir: Path,
                 tracking_uri: str) -> PipelineConfig:
    """The pipeline config of a round: the votes as data, the champion as model and reference, the same
    registry (tracking pinned: an unset tracking.uri would otherwise mean a new SQLite store in the round's
    folder), its own output folder."""
    d = config.model_dump(mode="json")
    d["run"]["output_dir"] = str(out_dir / "pipeline")
    d["data"].update(source="files", train_path=pairs.uri, sft_path=pairs.uri, heldout_path=None,
                     # "both bad" votes: undesirable examples for KTO; the pair methods would leave them out
                     unpaired_path=pairs.unpaired_uri if config.preference.method == "kto" else None)
    d["model"]["name_or_path"] = champion.path
    d["sft"]["enabled"] = False
    d["onpolicy"]["enabled"] = False
    d["tracking"]["uri"] = tracking_uri
    return PipelineConfig.model_validate(d)


def skip_reason(pairs: VotePairs, min_pairs: int) -> str | None:
    c = pairs.counts
    if c["pairs"] < min_pairs:
        return (f"{c['pairs']} preference pairs from {c['votes']} votes ({c['ties']} ties, {c['both_bad']} both bad, "
                f"{c['identical']} identical answers); a round needs at least {min_pairs}")
    if not pairs.train or not pairs.heldout:
        return (f"the held-out split of {c['pairs']} pairs by prompt hash leaves {pairs.train} to train on and "
                f"{pairs.heldout} held out: vote on more distinct prompts, or change data.heldout_fraction")
    return None


@task(name="human-gate", cache_policy=NO_CACHE)
def hold_for_human_gate(config: PipelineConfig, tracking_uri: str, version: str | None,
                        previous: Champion) -> dict[str, Any] | None:
    """With `promotion.min_human_win_rate` set, a new champion needs the arena's votes against the champion it
    was trained from: record the human gate on the version and, when it fails, put `champion` back."""
    promo = config.promotion
    if promo.min_human_win_rate is None or version is None:
        return None
    from mlflow import MlflowClient

    from arena.events import emit_safely, emit_to_prefect, gate_refused_event
    from tasks.arena import human_gates
    from tasks.registry import gate_tags

    gates = human_gates(tracking_uri, promo.model_name, version, min_win_rate=promo.min_human_win_rate,
                        min_votes=promo.min_human_votes, opponent=previous.version,
                        use_lower_bound=promo.use_lower_bound)
    client = MlflowClient(tracking_uri)
    passed = all(g.passed for g in gates)
    tags = {k: v for k, v in gate_tags(gates).items() if k != "gates.passed"}
    for key, value in tags.items():
        client.set_model_version_tag(promo.model_name, version, key, value)
    champion = str(client.get_model_version_by_alias(promo.model_name, "champion").version)
    restored = False
    if not passed:
        client.set_model_version_tag(promo.model_name, version, "gates.passed", "false")
        if champion == str(version):
            client.set_registered_model_alias(promo.model_name, "champion", previous.version)
            restored = True
        refused = gate_refused_event(promo.model_name, version, gates)
        if refused is not None:
            emit_safely(emit_to_prefect, refused)
    return {"passed": passed, "gates": [g.to_dict() for g in gates], "champion_restored_to":
            previous.version if restored else None}


@flow(name="feedback-round", log_prints=True)
def feedback_round(config: PipelineConfig = PipelineConfig(), arena_db: str | None = None,  # noqa: B008
                   min_pairs: int = 8) -> dict[str, Any]:
    """Arena votes -> preference pairs -> train the champion on them -> every gate -> registry. `config` is
    the pipeline's (training, evaluation and gate settings; its data and model sections are replaced);
    `arena_db` the arena's database (SQLAlchemy URL; default $ALIGNFLOW_ARENA_DB or the local stack's)."""
    from flows.pipeline import alignment_pipeline
    from tasks.tracking import resolve_tracking

    out_dir = round_dir(config)
    tracking_uri = resolve_tracking(config)[0]
    pairs = export_pairs(config, arena_db or default_arena_db(), out_dir)
    reason = skip_reason(pairs, min_pairs)
    if reason:
        print(f"feedback round skipped: {reason}")
        return {"skipped": reason, "votes": pairs.counts}
    champion = fetch_champion(tracking_uri, config.promotion.model_name, out_dir)
    print(f"feedback round: {pairs.counts['pairs']} pairs from {pairs.counts['votes']} votes ({pairs.uri}); "
          f"training {champion.name} v{champion.version} (champion)")
    result = alignment_pipeline(round_config(config, pairs, champion, out_dir, tracking_uri))
    human = hold_for_human_gate(config, tracking_uri, result.get("registered_version"), champion)
    return {**result, "votes": pairs.counts, "data": pairs.uri, "trained_from": champion.model_dump(),
            "human_gate": human}
