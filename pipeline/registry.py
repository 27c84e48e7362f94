"""Stage name -> implementing class ("module:Class"), imported lazily so that a job only
imports what it runs."""
from __future__ import annotations

import importlib

STAGES: dict[str, str] = {
    "ingest": "pipeline.ingest:IngestStage",
    "langid": "pipeline.langid:LangIDStage",
    "rules": "pipeline.rules:RulesStage",
    "quality": "pipeline.quality:QualityStage",
    "dedup": "pipeline.dedup:DedupStage",
    "shard": "pipeline.shard:ShardStage",
}


def get_stage(name: str):
    """Instantiate the stage registered under ``name``.

    Raises:
        KeyError: unknown stage name (the message lists the known ones).
    """
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    mod, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(mod), cls)()
