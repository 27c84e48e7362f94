"""Loading of the YAML configuration (``configs/pipeline.yaml`` and the source lists it names).

Paths inside the config are relative to the repository root unless absolute.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline.yaml"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
TARGET_LANGS = ("zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl",
                "ar", "tr", "he", "ja", "ko", "th", "vi", "id")


class ConfigError(ValueError):
    """The configuration is missing a required key or has a wrong value."""


def repo_path(p: str | os.PathLike) -> str:
    """Resolve a config path relative to the repository root."""
    p = Path(p)
    return str(p if p.is_absolute() else (REPO_ROOT / p))


def load_config(path: str | os.PathLike | None = None, data_root: str | None = None) -> dict:
    """Load the pipeline config and its sources.

    Args:
        path: YAML file; default ``configs/pipeline.yaml``.
        data_root: root of the raw inputs; default ``$POLY_DATA_ROOT`` or ``../shared/data``.

    Returns:
        dict with the YAML content plus ``_path``, ``data_root`` (absolute) and ``sources``
        (list of source dicts from the ``sources_file``).

    Raises:
        ConfigError: missing file, unknown language codes, sources without name/format/glob/tier.
    """
    path = Path(path or DEFAULT_CONFIG)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    cfg = yaml.safe_load(path.read_text()) or {}
    cfg["_path"] = str(path.resolve())
    root = data_root or os.environ.get("POLY_DATA_ROOT") or cfg.get("data_root") or str(DEFAULT_DATA_ROOT)
    # a URI (s3a://, gs://, hdfs://, file://...) is kept as is, never made a path under the repo
    cfg["data_root"] = root if "://" in str(root) else repo_path(root)
    cfg.setdefault("languages", list(TARGET_LANGS))
    bad = [l for l in cfg["languages"] if not (isinstance(l, str) and 2 <= len(l) <= 3)]
    if bad:
        raise ConfigError(f"languages must be ISO 639-1 codes, got {bad}")
    cfg.setdefault("stages", ["ingest", "langid", "shard"])
    src_files = cfg.get("sources_file") or []
    if isinstance(src_files, str):
        src_files = [src_files]
    paths = [repo_path(f) for f in src_files]
    for sp in paths:
        if not Path(sp).exists():
            raise ConfigError(f"sources_file not found: {sp}")
    from pipeline.readers import load_sources

    try:
        cfg["sources"] = load_sources(paths) if paths else []
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return cfg
