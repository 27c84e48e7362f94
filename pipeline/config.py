"""Loading and checking of the pipeline configuration (``configs/pipeline.yaml``, the files it
includes, the source lists it names, ``--set`` overrides and ``--input`` sources).

Relative paths, one rule per place they are written:

* **command line** (``--out``, ``--data-root``, ``--input``, ``--config``, ``--sources``, path
  values of ``--set``): relative to the current directory;
* **inside a YAML file** (``include``, ``sources_file``, ``data_root``, ``rules.filters``,
  ``langid.model``, ``quality.models_dir``, ``quality.classifier``, ``quality.models``): relative
  to the folder of the file that holds them;
* **data globs** (a source's ``glob`` / ``exclude`` and data options such as ``url_index``):
  relative to the data root (``--data-root``, else ``$POLY_DATA_ROOT``, else the config's
  ``data_root``, else ``../shared/data`` next to the repository).

:func:`load_config` makes every one of those paths absolute, so the stages and executors never
resolve a path themselves. URIs (``s3a://``, ``hdfs://``...) are kept as they are.

Strictness: an unknown key (top level, a stage section, a source entry or its ``options``) is a
:class:`ConfigError` naming the key and the closest known one; a string where a list is expected
(``stages: ingest``, ``rules.tiers: web``, ``languages: en``) is taken as a list of one item;
language codes are normalised to ISO 639-1 (``EN`` -> ``en``, ``eng``/``zho`` -> ``en``/``zh``)
and a code that names no language lid.176 knows is rejected.
"""
from __future__ import annotations

import copy
import difflib
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.registry import STAGES as _REGISTRY

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "pipeline.yaml"
DEFAULT_FILTERS = REPO_ROOT / "configs" / "filters.yaml"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
TARGET_LANGS = ("zh", "en", "ru", "es", "fr", "pt", "de", "it", "nl", "pl",
                "ar", "tr", "he", "ja", "ko", "th", "vi", "id")
#: Stages the chain may name (``stages:``): the registry's (:mod:`pipeline.registry`).
STAGES = tuple(_REGISTRY)

#: Top-level keys besides the stage sections and the keys of ``configs/pipeline.yaml``.
TOP_LEVEL_KEYS = {"include", "sources_file", "sources", "data_root", "languages", "stages", "fuse"}
#: Keys of each section besides those present in ``configs/pipeline.yaml`` (which are known
#: by being there: a key added to the shipped config is accepted everywhere).
SECTION_KEYS = {
    "ingest": {"max_doc_bytes", "only_sources"},
    "langid": {"model", "max_chars", "default_threshold", "thresholds"},
    "rules": {"filters", "tiers"},
    "shard": {"target_shard_bytes"},
}
#: Keys whose value is a list; a single string is taken as a list of one item.
LIST_KEYS = {("stages",), ("languages",), ("sources_file",), ("include",), ("rules", "tiers"),
             ("ingest", "only_sources"), ("quality", "bucket_percentiles")}
#: Path-valued keys inside YAML files: resolved relative to the file that holds them.
PATH_KEYS = {("sources_file",), ("data_root",), ("rules", "filters"), ("langid", "model"),
             ("quality", "models_dir"), ("quality", "classifier")}

#: Keys of a source entry (``configs/sources/*.yaml``; see :mod:`pipeline.readers`).
SOURCE_KEYS = {"name", "format", "glob", "exclude", "tier", "lang", "lang_from", "options", "enabled",
               "max_doc_bytes", "fields"}
#: Keys of a source's ``options`` (format options read by :mod:`pipeline.readers`).
SOURCE_OPTION_KEYS = {"max_doc_bytes", "max_garbage_ratio", "text_field", "lang_field", "id_field", "url_field",
                      "parser", "url_index", "extract", "lines_per_doc", "sents_per_doc", "split_pattern",
                      "max_chunk_bytes", "doc_patterns", "skip_uri_schemes", "batch_rows"}
#: ``fields:`` of a source (JSONL / parquet column names) -> the reader option it sets.
FIELD_OPTIONS = {"text": "text_field", "id": "id_field", "url": "url_field", "lang": "lang_field"}
#: Keys of a sources file.
SOURCES_FILE_KEYS = {"sources", "defaults"}


class ConfigError(ValueError):
    """The configuration is missing a required key or has a wrong value (CLIs exit 2)."""


def repo_path(p: str | os.PathLike) -> str:
    """Resolve a path relative to the repository root (absolute paths and URIs unchanged)."""
    if isinstance(p, str) and "://" in p:
        return p
    p = Path(p)
    return str(p if p.is_absolute() else (REPO_ROOT / p))


def cli_path(p: str | os.PathLike) -> str:
    """A path given on the command line: relative to the current directory (URIs unchanged)."""
    if isinstance(p, str) and "://" in p:
        return p
    return os.path.abspath(os.path.expanduser(str(p)))


def _file_path(p: Any, base: Path, where: str) -> str:
    if not isinstance(p, (str, os.PathLike)):
        raise ConfigError(f"{where}: expected a path, got {p!r}")
    s = str(p)
    if "://" in s:
        return s
    q = Path(os.path.expanduser(s))
    if q.is_absolute():
        return str(q)
    r = (base / q).resolve()
    if not r.exists() and (REPO_ROOT / q).exists():
        # configs written before the rule (paths relative to the repository root): still found
        print(f"warning: {where}: {s!r} is not under {base}; using {REPO_ROOT / q} (write paths inside a "
              f"YAML file relative to its folder)", file=sys.stderr)
        return str(REPO_ROOT / q)
    return str(r)


def suggest(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` (difflib ratio >= 0.6), else ``""``."""
    m = difflib.get_close_matches(str(key), sorted(map(str, known)), n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


def check_keys(d: dict, known: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``d`` not in ``known``, with a suggestion."""
    known = set(known)
    for k in d:
        if k not in known:
            shown = sorted(x for x in known if not str(x).startswith("_"))
            raise ConfigError(f"{where}: unknown key {k!r}{suggest(k, shown)}; known keys: {shown}")


def as_list(v: Any, where: str, allow_none: bool = False) -> list | None:
    """A list option: a list as is, one string (or number) as a list of one item, ``None`` as
    ``None`` (``allow_none``) or ``[]``.

    Raises:
        ConfigError: a mapping or another non-list value.
    """
    if v is None:
        return None if allow_none else []
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return [v]
    raise ConfigError(f"{where}: expected a list, got {type(v).__name__} {v!r}")


# ----------------------------------------------------------------------------- languages
def known_lid_labels() -> frozenset[str]:
    """ISO 639 codes that lid.176 (fastText, Joulin et al. 2016) can predict, plus the 18 targets."""
    return frozenset(_LID176_CODES | set(TARGET_LANGS))


#: The 176 ISO 639 codes of fastText's lid.176 (https://fasttext.cc/docs/en/language-identification.html).
_LID176_CODES = set(
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs "
    "cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr "
    "hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc "
    "lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa "
    "pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te "
    "tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh".split())


def normalize_languages(langs: Any, where: str = "languages") -> list[str]:
    """``languages:`` as ISO 639-1 codes: case folded (``EN`` -> ``en``), ISO 639-2/3 and
    regional tags mapped (``eng`` -> ``en``, ``zho`` -> ``zh``, ``pt-BR`` -> ``pt``), duplicates
    dropped (first kept).

    Raises:
        ConfigError: a code that maps to no language lid.176 can label (every document would be
            rejected as ``lang_not_target``).
    """
    from pipeline.readers import to_iso639_1

    out: list[str] = []
    bad = []
    for x in as_list(langs, where):
        code = to_iso639_1(str(x)) if isinstance(x, str) else None
        if code is None or code not in known_lid_labels():
            bad.append(x)
        elif code not in out:
            out.append(code)
    if bad:
        raise ConfigError(f"{where}: {bad} are not language codes the language identifier (lid.176) labels; "
                          f"use ISO 639-1 codes such as {list(TARGET_LANGS[:6])}")
    if not out:
        raise ConfigError(f"{where}: no languages given")
    return out


# ----------------------------------------------------------------------------- files
def _read_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(doc).__name__}")
    return doc


def _merge(base: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _absolutize(doc: dict, base: Path, where: str) -> dict:
    """Resolve the path-valued keys of one YAML file against ``base`` (its folder)."""
    doc = copy.deepcopy(doc)
    for key in PATH_KEYS:
        node = doc
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(key[-1]) is not None:
            v = node[key[-1]]
            name = ".".join(key)
            if key in LIST_KEYS:
                node[key[-1]] = [_file_path(x, base, f"{where}: {name}") for x in as_list(v, name)]
            else:
                node[key[-1]] = _file_path(v, base, f"{where}: {name}")
    q = doc.get("quality")
    if isinstance(q, dict) and isinstance(q.get("models"), dict):
        for lang, m in q["models"].items():
            if isinstance(m, dict):
                for k in ("sp_model", "kenlm"):
                    if m.get(k) is not None:
                        m[k] = _file_path(m[k], base, f"{where}: quality.models.{lang}.{k}")
    return doc


def read_config_file(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """One pipeline YAML with its ``include:`` files merged under it (the including file wins;
    mappings merge key by key), path keys made absolute (see the module docstring).

    Raises:
        ConfigError: missing file, invalid YAML, an include cycle.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"include cycle: {' -> '.join(map(str, _seen + (path,)))}")
    doc = _absolutize(_read_yaml(path, "config file"), path.parent, str(path))
    merged: dict = {}
    for inc in as_list(doc.pop("include", None), f"{path}: include"):
        merged = _merge(merged, read_config_file(_file_path(inc, path.parent, f"{path}: include"), _seen + (path,)))
    return _merge(merged, doc)


def parse_set(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``--set section.key=value`` items -> ``(key path, value)``; values parse as YAML
    (``0.7``, ``true``, ``[en, de]``, ``null``), as the trainer's ``--set`` does.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set dedup.threshold=0.7")
        k, v = item.split("=", 1)
        parts = [p for p in k.strip().split(".")]
        if not k.strip() or any(not p for p in parts):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            val = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            val = v
        out.append((parts, val))
    return out


def apply_overrides(cfg: dict, items: Iterable[str]) -> dict:
    """Apply ``--set`` items to ``cfg`` (in place; returns it). Path-valued keys given here are
    relative to the current directory."""
    for parts, val in parse_set(items):
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if tuple(parts) in PATH_KEYS and val is not None:
            val = [cli_path(x) for x in as_list(val, ".".join(parts))] if tuple(parts) in LIST_KEYS \
                else cli_path(str(val))
        node[parts[-1]] = val
    return cfg


def input_source(input_glob: str | list[str], fmt: str, tier: str = "web", name: str | None = None,
                 lang: str | None = None, fields: dict | None = None) -> dict:
    """The source entry ``--input GLOB --format FMT [--tier T]`` stands for: ``glob`` relative
    to the current directory (made absolute; URIs kept), named after the format unless
    ``name`` is given."""
    globs = input_glob if isinstance(input_glob, list) else [input_glob]
    src = {"name": name or f"input-{fmt}", "format": fmt, "tier": tier,
           "glob": [cli_path(g) for g in globs]}
    if lang:
        src["lang"] = lang
    if fields:
        src["fields"] = dict(fields)
    return src


# ----------------------------------------------------------------------------- sources
def _source_entries(doc: dict, where: str, base: Path) -> list[dict]:
    check_keys(doc, SOURCES_FILE_KEYS, where)
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: defaults must be a mapping")
    entries = doc.get("sources")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: sources must be a list of source entries")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ConfigError(f"{where}: sources[{i}] must be a mapping, got {e!r}")
        out.append(_merge(defaults, e))
    return out


def check_source(src: dict, where: str) -> dict:
    """Check the keys of one source entry and normalise it: ``fields:`` becomes reader options,
    ``glob``/``exclude`` lists. Returns a new dict without private keys.

    Raises:
        ConfigError: unknown key (entry, ``options`` or ``fields``), bad ``fields``.
    """
    src = {k: v for k, v in src.items() if not k.startswith("_")}
    name = src.get("name", "?")
    w = f"{where}: source {name!r}"
    check_keys(src, SOURCE_KEYS, w)
    opts = src.get("options") or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"{w}: options must be a mapping")
    check_keys(opts, SOURCE_OPTION_KEYS, f"{w}: options")
    opts = dict(opts)
    fields = src.pop("fields", None) or {}
    if not isinstance(fields, dict):
        raise ConfigError(f"{w}: fields must map text/id/url/lang to column names, got {fields!r}")
    check_keys(fields, FIELD_OPTIONS, f"{w}: fields")
    for k, col in fields.items():
        if not isinstance(col, str) or not col:
            raise ConfigError(f"{w}: fields.{k} must be a column name, got {col!r}")
        opts[FIELD_OPTIONS[k]] = col
    if opts:
        src["options"] = opts
    for k in ("glob", "exclude"):
        if k in src and src[k] is not None:
            src[k] = [str(g) for g in as_list(src[k], f"{w}: {k}")]
    return src


def load_sources_files(paths: Iterable[str]) -> list[dict]:
    """Source entries of YAML sources files, in order, strict keys (see :func:`check_source`)."""
    out = []
    for p in paths:
        path = Path(p)
        out += _source_entries(_read_yaml(path, "sources_file"), str(path), path.parent)
    return out


# ----------------------------------------------------------------------------- the loader
def _known_sections() -> dict[str, set]:
    """Known keys per section: :data:`SECTION_KEYS` + the keys of the shipped pipeline.yaml +
    the dedup dataclass fields."""
    known = {k: set(v) for k, v in SECTION_KEYS.items()}
    try:
        shipped = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")) or {}
    except OSError:
        shipped = {}
    for k, v in shipped.items():
        if isinstance(v, dict):
            known.setdefault(k, set()).update(v)
        else:
            TOP_LEVEL_KEYS.add(k)
    try:
        from pipeline.dedup import DedupConfig

        known.setdefault("dedup", set()).update(DedupConfig.__dataclass_fields__)
    except Exception:  # noqa: BLE001 - dedup's own check still runs in the stage
        pass
    return known


def validate(cfg: dict, where: str) -> dict:
    """Check keys and list values of a merged config (in place; returns it).

    Raises:
        ConfigError: unknown key, wrong type, unknown stage, bad languages.
    """
    sections = _known_sections()
    check_keys(cfg, TOP_LEVEL_KEYS | set(sections) | {"_path"}, where)
    for sec, known in sections.items():
        v = cfg.get(sec)
        if v is None:
            continue
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: {sec} must be a mapping of settings, got {v!r}")
        check_keys(v, known, f"{where}: {sec}")
    for key in LIST_KEYS:
        node = cfg
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and key[-1] in node:
            allow_none = key == ("rules", "tiers")
            node[key[-1]] = as_list(node[key[-1]], f"{where}: {'.'.join(key)}", allow_none=allow_none)
    if "stages" in cfg and not cfg["stages"]:
        raise ConfigError(f"{where}: stages is empty: name the chain, e.g. [ingest, langid, shard] "
                          f"(known stages, in order: {list(STAGES)})")
    stages = [str(s) for s in cfg.get("stages") or ["ingest", "langid", "shard"]]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"{where}: stages: unknown stage {unknown[0]!r}{suggest(unknown[0], STAGES)}; "
                          f"known: {list(STAGES)}")
    # each stage reads the previous one's output: the chain starts at ingest, names a stage once
    # and keeps the registry's order (ingest, langid, rules, quality, dedup, shard)
    order = [STAGES.index(s) for s in stages]
    if stages[0] != "ingest" or any(b <= a for a, b in zip(order, order[1:])):
        raise ConfigError(f"{where}: stages {stages}: the chain must start with ingest and name each stage "
                          f"once, in the order {list(STAGES)} (leave stages out to skip them)")
    cfg["stages"] = stages
    if not isinstance(cfg.get("fuse", True), bool):
        raise ConfigError(f"{where}: fuse must be true or false, got {cfg['fuse']!r}")
    tiers = (cfg.get("rules") or {}).get("tiers")
    if tiers is not None:
        from pipeline.readers import TIERS

        bad = [t for t in tiers if t not in TIERS]
        if bad:
            raise ConfigError(f"{where}: rules.tiers: unknown tier {bad[0]!r}{suggest(bad[0], TIERS)}; known: {list(TIERS)}")
    cfg["languages"] = normalize_languages(cfg.get("languages", list(TARGET_LANGS)), f"{where}: languages")
    return cfg


def load_config(path: str | os.PathLike | None = None, data_root: str | None = None,
                overrides: Iterable[str] = (), sources_files: Iterable[str] = (),
                inputs: Iterable[dict] = (), use_config_sources: bool = True) -> dict:
    """Load, merge and check the pipeline config and its sources.

    Args:
        path: YAML file; default ``configs/pipeline.yaml``.
        data_root: root of the raw inputs (command line: relative to the current directory);
            default ``$POLY_DATA_ROOT``, the config's ``data_root``, ``../shared/data``.
        overrides: ``section.key=value`` items (``--set``), applied after the files.
        sources_files: extra sources files (``--sources``, relative to the current directory).
        inputs: extra source entries (``--input``, see :func:`input_source`).
        use_config_sources: False = leave out the config's own ``sources_file``/``sources``
            (``--input`` / ``--sources`` replace them).

    Returns:
        dict with the merged YAML content plus ``_path``, ``data_root`` (absolute), ``languages``
        (ISO 639-1), ``stages`` and ``sources`` (list of checked source dicts).

    Raises:
        ConfigError: anything wrong in the files or values (the message names the key and fix).
    """
    path = Path(path or DEFAULT_CONFIG)
    cfg = read_config_file(path)
    apply_overrides(cfg, overrides)
    cfg["_path"] = str(path.resolve())
    validate(cfg, str(path))
    root = data_root or os.environ.get("POLY_DATA_ROOT")
    # a URI (s3a://, gs://, hdfs://, file://...) is kept as is, never made a local path
    cfg["data_root"] = ((root if "://" in str(root) else cli_path(root)) if root
                        else (cfg.get("data_root") or str(DEFAULT_DATA_ROOT)))
    entries: list[dict] = []
    if use_config_sources:
        for sp in cfg.get("sources_file") or []:
            if "://" not in sp and not Path(sp).exists():
                raise ConfigError(f"sources_file not found: {sp} (paths inside {path.name} are relative "
                                  f"to its folder {path.parent})")
        entries += load_sources_files(cfg.get("sources_file") or [])
        entries += _source_entries({"sources": cfg.get("sources")}, str(path), path.parent)
    else:
        cfg["sources_file"] = []
    entries += load_sources_files([cli_path(s) for s in sources_files])
    entries += [dict(s) for s in inputs]
    from pipeline.readers import validate_source

    sources, seen = [], set()
    for e in entries:
        src = check_source(e, str(path))
        if src.get("enabled", True) is False:
            continue
        try:
            validate_source(src)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if src["name"] in seen:
            raise ConfigError(f"duplicate source name {src['name']!r}: give each source its own name")
        seen.add(src["name"])
        sources.append(src)
    cfg["sources"] = sources
    _check_stage_configs(cfg, str(path))
    return cfg


#: (section, key, minimum, maximum or None, integer?) of the plain numbers the stages read; checked on
#: the driver so a bad value stops the job before Spark starts, not at its stage hours later.
NUMBER_RULES = [("ingest", "max_doc_bytes", 1, None, True), ("shard", "target_shard_bytes", 1, None, True),
                ("langid", "max_chars", 1, None, True), ("langid", "default_threshold", 0.0, 1.0, False),
                ("dedup", "num_perm", 1, None, True), ("dedup", "seed", 0, None, True),
                ("dedup", "threshold", 0.0, 1.0, False), ("dedup", "ngram", 1, None, True),
                ("dedup", "char_ngram", 1, None, True), ("dedup", "max_bucket_pairs", 2, None, True),
                ("dedup", "max_iter", 1, None, True)]


def _check_numbers(cfg: dict, where: str) -> None:
    for sec, key, lo, hi, integer in NUMBER_RULES:
        v = (cfg.get(sec) or {}).get(key)
        if v is None:
            continue
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)):
            raise ConfigError(f"{where}: {sec}.{key} must be {kind} {bound}, got {v!r} "
                              f"(e.g. --set {sec}.{key}={DEFAULT_NUMBERS[(sec, key)]})")
        if v < lo or (hi is not None and v > hi):
            raise ConfigError(f"{where}: {sec}.{key} must be {kind} {bound}, got {v!r} "
                              f"(e.g. --set {sec}.{key}={DEFAULT_NUMBERS[(sec, key)]})")


DEFAULT_NUMBERS = {("ingest", "max_doc_bytes"): 8388608, ("shard", "target_shard_bytes"): 134217728,
                   ("langid", "max_chars"): 20000, ("langid", "default_threshold"): 0.5,
                   ("dedup", "num_perm"): 128, ("dedup", "seed"): 1, ("dedup", "threshold"): 0.8,
                   ("dedup", "ngram"): 5, ("dedup", "char_ngram"): 5, ("dedup", "max_bucket_pairs"): 50,
                   ("dedup", "max_iter"): 100}


def _check_stage_configs(cfg: dict, where: str) -> None:
    """Run the stages' own config checks on the driver, before Spark starts."""
    _check_numbers(cfg, where)
    rules = cfg.get("rules") or {}
    if "rules" in cfg["stages"]:
        fpath = rules.get("filters") or str(DEFAULT_FILTERS)
        try:
            from filters.rules import load_filter_config

            load_filter_config(fpath)
        except ValueError as e:
            raise ConfigError(f"rules.filters ({fpath}): {e}") from e
        except OSError as e:
            raise ConfigError(f"rules.filters: cannot read {fpath}: {e}") from e
    if "dedup" in cfg["stages"]:
        try:
            from pipeline.dedup import DedupConfig

            DedupConfig.from_dict(dict(cfg.get("dedup") or {}))
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from e


def write_resolved(cfg: dict, path: str | os.PathLike) -> str:
    """Write a loaded config as one self-contained YAML file (absolute paths, the checked
    ``sources`` inline, no ``include``/``sources_file``), so another process (e.g. each
    ``spark-submit`` of a cluster run) loads exactly the same config, ``--input``/``--set``
    included. Returns the path."""
    doc = {k: copy.deepcopy(v) for k, v in cfg.items() if not k.startswith("_") and k != "sources_file"}
    doc["sources"] = [dict(s) for s in cfg.get("sources") or []]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by pipeline.config.write_resolved from " + str(cfg.get("_path")) + "\n"
                    + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return str(path)


def fail(message: str) -> int:
    """Print ``error: message`` to stderr and return 2 (the exit status of a bad configuration)."""
    print(f"error: {message}", file=sys.stderr)
    return 2
