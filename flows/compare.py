"""DPO vs ORPO (vs beta values): train every variant from the same cached data and SFT model, evaluate them
all the same way, and write one comparison report with the best candidate marked.

Each variant is an ordinary pipeline run (a subflow with its own MLflow parent run) sharing the output
directory, so data preparation, the base model, SFT and the reference's log-probs and benchmarks are computed
once (content-keyed caches) and only the preference stage and the evaluation run per variant. Variants are
not registered; with `register_best` the best one is (its pipeline re-run hits every training cache).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from alignment.config import PipelineConfig
from flows.pipeline import alignment_pipeline
from tasks.comparison import Variant, best_variant, publish_comparison, variant_row


def build_variants(config: PipelineConfig, methods: list[str], dpo_betas: list[float] | None) -> list[Variant]:
    """One variant per method; DPO once per beta when betas are given (else with the config's beta)."""
    variants: list[Variant] = []
    for method in dict.fromkeys(methods):
        betas = (dpo_betas or [config.dpo.beta]) if method == "dpo" else [None]
        for beta in betas:
            data = config.model_dump()
            data["preference"]["method"] = method
            data["promotion"]["register_model"] = False
            name = method
            if beta is not None:
                data["dpo"]["beta"] = beta
                name = f"dpo-beta-{beta:g}" if dpo_betas else "dpo"
            # each variant's summary.json in its own folder: the user's own run's summary is never overwritten
            data["run"]["summary_dir"] = str(Path(config.run.output_dir) / "compare" / "variants" / name)
            variants.append(Variant(name=name, config=PipelineConfig.model_validate(data)))
    return variants


@flow(name="compare-methods", log_prints=True)
def compare_methods(config: PipelineConfig = PipelineConfig(),  # noqa: B008
                    methods: list[Literal["dpo", "orpo", "kto"]] = ["dpo", "orpo"],  # noqa: B006
                    dpo_betas: list[float] | None = None, register_best: bool = False) -> dict[str, Any]:
    """Train and evaluate each variant; return the report's path, the best variant and one row per variant."""
    logger = get_run_logger()
    variants = build_variants(config, list(methods), dpo_betas)
    rows = []
    for variant in variants:
        logger.info("variant %s: running the pipeline", variant.name)
        result = alignment_pipeline.with_options(flow_run_name=f"variant-{variant.name}")(variant.config)
        summary = json.loads(Path(result["summary_path"]).read_text())
        rows.append(variant_row(variant, summary))
    best = best_variant(rows)
    for row in rows:
        row["best"] = row["variant"] == best
    report = publish_comparison(config, rows, best)
    registered = None
    if register_best and best:
        chosen = next(v for v in variants if v.name == best)
        data = chosen.config.model_dump()
        data["promotion"]["register_model"] = config.promotion.register_model
        data["run"]["summary_dir"] = config.run.summary_dir
        result = alignment_pipeline.with_options(flow_run_name=f"register-{best}")(PipelineConfig.model_validate(data))
        registered = {"version": result["registered_version"], "aliases": result["aliases"]}
    create_markdown_artifact(markdown=f"Best variant: **{best}**; report `{report}`", key="compare-methods",
                             description="alignflow method comparison")
    return {"report_path": str(report), "best": best, "rows": rows, "registered": registered}
