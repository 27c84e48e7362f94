"""Curriculum data loader over the token shards of the ``tokenize`` stage.

Input: ``<tokens_dir>/manifest.json`` (written by ``jobs/tokenize.py``: tokenizer path,
vocab_size, bos/eos/pad ids, one entry per (lang, source) *stream* with tier, document and token
counts and its shard files relative to ``tokens_dir``, total_tokens) and the shards
``lang=xx/source=yy/part-*.parquet`` (one document per row, ``input_ids: list<int32>`` with EOS
appended, ``id: string``).

How batches are made
--------------------
* **Streams.** Each (lang, source) stream is read as one endless token sequence: per epoch the
  stream's file order and, inside each file, the row order are permuted by a NumPy generator
  seeded with ``(seed, stream index, epoch[, file])``; the documents are concatenated (EOS is
  already appended by the tokenizer). The loader keeps positions, not tokens: per stream the
  current file's row permutation and cumulative token starts (16 B per row, plus 8 B per row of
  lengths while indexing).
* **Packing.** A sample is the next ``seq_len + 1`` tokens of one stream: ``input_ids`` =
  window[:-1], ``labels`` = window[1:]. Windows never overlap and every sample has exactly one
  language, which the batch carries (``lang_ids``) for per-language loss.
* **Mixing.** Within a curriculum stage every stream has a target share ``w_s`` of the stage's
  windows (hence tokens): the language's share from ``lang_weights`` times the stream's share
  inside its language (token count x ``source_weights`` multiplier). Windows are assigned by
  stride scheduling: the next window goes to the stream with the smallest ``(n_s + 1) / w_s``
  (``n_s`` = windows already taken in this stage; ties to the lower stream index). This is
  deterministic and keeps every stream within one window of its exact share at all times, so
  the realised token share per language converges to the configured one at rate 1/N.
* **Ranks.** The window sequence is global: every rank runs the (cheap, index-only) schedule for
  the whole global batch and materialises only its own contiguous block of
  ``global_batch_size / world`` windows, split into gradient-accumulation micro-batches. So a
  run at any world size sees the same global batches.
* **Reading only this rank's rows.** A window is a token range of the permuted file, i.e. a few
  rows; each rank reads from Parquet only the row groups holding the rows of its own windows
  (``pyarrow`` ``read_row_group``, column ``input_ids``), each once per step, through a
  least-recently-used cache of decoded row groups bounded by ``cache_bytes``. Row lengths come
  from an ``n_tokens`` column when the shard has one (a few bytes per row), else from one pass
  over ``input_ids`` per file, one row group at a time. How much a rank reads is therefore its
  share of the rows times the row-group granularity: with row groups of at most about
  ``world`` documents a rank reads close to ``1/world`` of the bytes; with large row groups
  (e.g. 8192 rows) its rows touch most groups, and a file larger than ``cache_bytes`` has
  evicted groups read again for later windows (set ``cache_bytes`` to a file's decoded size to
  read each file once per epoch). :attr:`CurriculumLoader.read_stats` counts it.
* **Prefetch.** With ``prefetch = k > 0`` a background thread makes the next ``k`` batches
  (bounded queue; Parquet decoding releases the GIL), so the training thread only waits when
  reading is slower than a step. Batches and :meth:`CurriculumLoader.state_dict` (the state
  after the last batch *returned*) are identical with and without prefetch.
* **Memory per rank** (bounded, independent of shard sizes except the per-row index):
  ``k + 1`` batches of ``local_batch x (seq_len + 1)`` int64 tokens (plus the ``input_ids`` /
  ``labels`` copies of the batch being returned), at most ``cache_bytes`` (default 256 MiB) of
  decoded row groups plus one more row group, and 16 B per row of each stream's current file
  (24 B while a file is indexed). With 2048-token windows, 32 windows per rank and ``k = 2``:
  about 3 MiB of batches.
* **Resume.** :meth:`CurriculumLoader.state_dict` holds the step, the stage, the per-stream
  window counts of the stage and each stream's (epoch, file position, token offset); there is
  no other random state (permutations are re-derived from the seed), so
  :meth:`load_state_dict` resumes mid-stage exactly, at any world size.
* **Validation.** Documents held out by :func:`select_validation_rows` (in the first
  ``val_files_per_stream`` files of each stream) are excluded from training and packed per
  language into fixed validation windows (:meth:`CurriculumLoader.validation_set`).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch

from training.train_config import StageConfig, paper_curriculum

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value ignored by the loss (PyTorch cross_entropy convention)


# --------------------------------------------------------------------------------------------
# manifest


@dataclass(frozen=True)
class StreamInfo:
    """One (lang, source) stream of the token manifest. ``files`` are absolute paths."""

    index: int
    lang: str
    source: str
    tier: str
    documents: int
    tokens: int
    files: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.lang}/{self.source}"


@dataclass(frozen=True)
class TokenManifest:
    """Parsed ``<tokens_dir>/manifest.json``."""

    root: Path
    tokenizer: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    streams: tuple[StreamInfo, ...]
    total_tokens: int

    @property
    def languages(self) -> list[str]:
        """Languages in manifest order (first appearance), deduplicated."""
        seen: dict[str, None] = {}
        for s in self.streams:
            seen.setdefault(s.lang, None)
        return list(seen)


#: Token manifest name written by ``jobs/tokenize.py`` (hidden, so parquet loaders skip it);
#: ``manifest.json`` is still read for token folders written before.
MANIFEST_NAMES = (".manifest.json", "manifest.json")


def manifest_path(tokens_dir: str | Path) -> Path:
    """The manifest file of ``tokens_dir``: the first of :data:`MANIFEST_NAMES` that exists
    (the first name when none does)."""
    root = Path(tokens_dir)
    return next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), root / MANIFEST_NAMES[0])


def load_manifest(tokens_dir: str | Path) -> TokenManifest:
    """Read and check ``<tokens_dir>/.manifest.json`` (or ``manifest.json``, see :func:`manifest_path`).

    Raises ``FileNotFoundError`` if the manifest or a listed shard file is missing and
    ``ValueError`` if a required field is absent or a stream is listed twice.
    """
    root = Path(tokens_dir)
    mpath = manifest_path(root)
    if not mpath.is_file():
        raise FileNotFoundError(
            f"token manifest not found: {mpath} (run the tokenize stage first, e.g. `make tokenize`)"
        )
    raw = json.loads(mpath.read_text())
    for key in ("vocab_size", "eos_id", "streams"):
        if key not in raw:
            raise ValueError(f"{mpath}: missing field {key!r}")
    streams: list[StreamInfo] = []
    seen: set[tuple[str, str]] = set()
    for i, s in enumerate(raw["streams"]):
        for key in ("lang", "source", "files"):
            if key not in s:
                raise ValueError(f"{mpath}: stream #{i} lacks field {key!r}")
        k = (s["lang"], s["source"])
        if k in seen:
            raise ValueError(f"{mpath}: stream {k} listed twice")
        seen.add(k)
        files = []
        for f in s["files"]:
            p = (root / f).resolve()
            if not p.is_file():
                raise FileNotFoundError(f"{mpath}: stream {k[0]}/{k[1]} lists missing shard {p}")
            files.append(str(p))
        streams.append(
            StreamInfo(
                index=len(streams),
                lang=str(s["lang"]),
                source=str(s["source"]),
                tier=str(s.get("tier", "web")),
                documents=int(s.get("documents", 0)),
                tokens=int(s.get("tokens", 0)),
                files=tuple(files),
            )
        )
    if not streams:
        raise ValueError(f"{mpath}: no streams")
    return TokenManifest(
        root=root,
        tokenizer=str(raw.get("tokenizer", "")),
        vocab_size=int(raw["vocab_size"]),
        bos_id=int(raw.get("bos_id", -1)),
        eos_id=int(raw["eos_id"]),
        pad_id=int(raw.get("pad_id", raw["eos_id"])),
        streams=tuple(streams),
        total_tokens=int(raw.get("total_tokens", sum(s.tokens for s in streams))),
    )


def _read_ids(path: str) -> list[str]:
    schema = pq.read_schema(path)
    n = pq.ParquetFile(path).metadata.num_rows
    if "id" not in schema.names:
        return [f"{path}#{i}" for i in range(n)]
    return [str(x) for x in pq.read_table(path, columns=["id"]).column("id").to_pylist()]


def select_validation_rows(ids: Sequence[str], fraction: float) -> np.ndarray:
    """Rows held out for validation: the ``ceil(fraction * n)`` rows with the smallest CRC32 of
    their id (ties by row), at least one when ``n >= 2`` and ``fraction > 0``; none when
    ``n < 2``. Returns sorted int64 row indices. Deterministic across runs and machines."""
    n = len(ids)
    if fraction <= 0 or n < 2:
        return np.zeros(0, dtype=np.int64)
    k = min(n - 1, max(1, math.ceil(fraction * n)))
    h = np.array([zlib.crc32(i.encode("utf-8")) for i in ids], dtype=np.int64)
    order = np.lexsort((np.arange(n), h))
    return np.sort(order[:k]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# one stream


@dataclass
class StreamPosition:
    """Where a stream's reader is: ``epoch``, index into the epoch's file order, token offset
    into that file's permuted, concatenated tokens."""

    epoch: int = 0
    file_pos: int = 0
    offset: int = 0


class _ShardIndex:
    """Row-group layout and per-row token counts of one shard (no token values).

    ``lengths`` int64 [rows] comes from an ``n_tokens`` column when the shard has one (a few
    bytes per row to read), else from one pass over ``input_ids`` one row group at a time (the
    values are decoded and dropped; memory: one row group). ``group_starts`` int64 [groups + 1]
    are the first row of each row group (from the footer).
    """

    def __init__(self, path: str, stats: "ReadStats"):
        pf = pq.ParquetFile(path)
        md = pf.metadata
        self.path = path
        self.group_starts = np.zeros(md.num_row_groups + 1, dtype=np.int64)
        np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)], out=self.group_starts[1:])
        names = pf.schema_arrow.names
        col = "n_tokens" if "n_tokens" in names else "input_ids"
        ci = names.index(col)
        parts = []
        for g in range(md.num_row_groups):
            t = pf.read_row_group(g, columns=[col])
            stats.index_bytes += md.row_group(g).column(ci).total_compressed_size
            c = t.column(0).combine_chunks()
            if c.null_count:
                raise ValueError(f"{path}: {col} has {c.null_count} null rows")
            if col == "input_ids":
                off = np.asarray(c.offsets, dtype=np.int64)
                parts.append(np.diff(off))
            else:
                parts.append(np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.int64))
        self.lengths = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if len(self.lengths) != md.num_rows:
            raise ValueError(f"{path}: {len(self.lengths)} lengths for {md.num_rows} rows")
        if (self.lengths < 0).any():
            raise ValueError(f"{path}: negative n_tokens")

    def group_of(self, rows: np.ndarray) -> np.ndarray:
        """Row group of each row (int64, same shape)."""
        return np.searchsorted(self.group_starts, rows, side="right") - 1


@dataclass
class ReadStats:
    """What one rank's loader read: ``row_groups`` decoded, ``rows_decoded`` (all rows of those
    groups), ``rows_used`` (rows whose tokens went into this rank's windows), ``bytes_read``
    (compressed ``input_ids`` column-chunk bytes of the groups read), ``index_bytes``
    (compressed bytes read to learn row lengths) and ``peak_cache_bytes`` (decoded row groups
    held at once)."""

    row_groups: int = 0
    rows_decoded: int = 0
    rows_used: int = 0
    bytes_read: int = 0
    index_bytes: int = 0
    peak_cache_bytes: int = 0


class _GroupCache:
    """Decoded ``input_ids`` row groups, least recently used evicted above ``max_bytes``."""

    def __init__(self, max_bytes: int, stats: ReadStats):
        self.max_bytes = int(max_bytes)
        self.stats = stats
        self._items: "dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]" = {}
        self._bytes = 0

    def get(self, path: str, group: int) -> tuple[np.ndarray, np.ndarray]:
        key = (path, group)
        hit = self._items.pop(key, None)
        if hit is None:
            pf = pq.ParquetFile(path)
            col = pf.read_row_group(group, columns=["input_ids"]).column(0).combine_chunks()
            if col.null_count:
                raise ValueError(f"{path}: input_ids has {col.null_count} null rows")
            off = np.asarray(col.offsets, dtype=np.int64)
            val = np.asarray(col.values.to_numpy(zero_copy_only=False)).astype(np.int32, copy=False)
            if off[0] != 0:
                val, off = val[off[0]: off[-1]], off - off[0]
            hit = (off, val)
            md = pf.metadata.row_group(group)
            self.stats.row_groups += 1
            self.stats.rows_decoded += md.num_rows
            self.stats.bytes_read += md.column(pf.schema_arrow.names.index("input_ids")).total_compressed_size
            self._bytes += off.nbytes + val.nbytes
            self.stats.peak_cache_bytes = max(self.stats.peak_cache_bytes, self._bytes)
        self._items[key] = hit
        while self._bytes > self.max_bytes and len(self._items) > 1:
            old = next(iter(self._items))
            o, v = self._items.pop(old)
            self._bytes -= o.nbytes + v.nbytes
        return hit


class _StreamReader:
    """Endless token sequence of one stream (see module docstring), as positions only.

    Per file it holds the epoch's row permutation and the cumulative token starts of the
    permuted rows (16 B per row); :meth:`take` turns the next ``n`` tokens into ``(shard path,
    row, first token, end token)`` pieces, which the loader reads for its own windows only.
    """

    def __init__(self, info: StreamInfo, seed: int, excluded_rows: dict[int, np.ndarray],
                 stats: ReadStats):
        self.info = info
        self.seed = int(seed)
        self.excluded = excluded_rows
        self.stats = stats
        self.pos = StreamPosition()
        self._cache_key: tuple[int, int] | None = None
        self._layout: tuple[str, np.ndarray, np.ndarray] = ("", np.zeros(0, np.int64), np.zeros(1, np.int64))

    def _file_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.info.index, epoch])
        return rng.permutation(len(self.info.files))

    def _load(self) -> tuple[str, np.ndarray, np.ndarray]:
        """(path, permuted rows int64 [k], cumulative token starts int64 [k + 1]) of the
        current file: the same permutation as reading the whole file and concatenating."""
        key = (self.pos.epoch, self.pos.file_pos)
        if self._cache_key == key:
            return self._layout
        fidx = int(self._file_order(self.pos.epoch)[self.pos.file_pos])
        path = self.info.files[fidx]
        index = _ShardIndex(path, self.stats)
        rows = np.arange(len(index.lengths), dtype=np.int64)
        if fidx in self.excluded and len(self.excluded[fidx]):
            rows = np.setdiff1d(rows, self.excluded[fidx], assume_unique=True)
        rng = np.random.default_rng([self.seed, self.info.index, self.pos.epoch, fidx, 1])
        perm = rows[rng.permutation(len(rows))]
        cum = np.zeros(len(perm) + 1, dtype=np.int64)
        np.cumsum(index.lengths[perm], out=cum[1:])
        self._cache_key, self._layout = key, (path, perm, cum)
        self._index = index
        return self._layout

    def _advance_file(self) -> None:
        self.pos.file_pos += 1
        self.pos.offset = 0
        if self.pos.file_pos >= len(self.info.files):
            self.pos.file_pos = 0
            self.pos.epoch += 1

    def take(self, n: int, materialize: bool = True) -> list[tuple[str, int, int, int, int]] | None:
        """Pieces ``(path, row group, row, first token, end token)`` of the next ``n`` tokens
        (token offsets inside the row), or with ``materialize=False`` just skip them."""
        pieces: list[tuple[str, int, int, int, int]] = []
        need = n
        empty_files = 0
        while need > 0:
            path, perm, cum = self._load()
            avail = int(cum[-1]) - self.pos.offset
            if avail <= 0:
                empty_files += 1
                if empty_files > len(self.info.files):
                    raise ValueError(
                        f"stream {self.info.key} has no training tokens (all documents held out "
                        f"for validation or empty shards); remove it from the mix or lower data.val_fraction"
                    )
                self._advance_file()
                continue
            empty_files = 0
            k = min(avail, need)
            if materialize:
                a, b = self.pos.offset, self.pos.offset + k
                i0 = int(np.searchsorted(cum, a, side="right")) - 1
                i1 = int(np.searchsorted(cum, b, side="left"))
                rows = perm[i0:i1]
                groups = self._index.group_of(rows)
                for j, (r, g) in enumerate(zip(rows.tolist(), groups.tolist())):
                    lo = max(a, int(cum[i0 + j])) - int(cum[i0 + j])
                    hi = min(b, int(cum[i0 + j + 1])) - int(cum[i0 + j])
                    if hi > lo:
                        pieces.append((path, g, r - int(self._index.group_starts[g]), lo, hi))
            self.pos.offset += k
            need -= k
            if self.pos.offset >= int(cum[-1]):
                self._advance_file()
        return pieces if materialize else None


# --------------------------------------------------------------------------------------------
# mixing


def language_shares(stage: StageConfig, lang_tokens: dict[str, int]) -> dict[str, float]:
    """Target token share per language for ``stage`` given tokens per language in the data.

    Returns shares summing to 1 over languages with a positive share. Languages named in
    ``lang_weights`` but absent from the data are dropped (logged) and the rest renormalised.
    Raises ``ValueError`` on negative weights or if nothing remains.
    """
    present = {k: v for k, v in lang_tokens.items() if v > 0}
    lw = stage.lang_weights
    raw: dict[str, float] = {}
    if lw is None or lw == "natural":
        raw = {k: float(v) for k, v in present.items()}
    elif isinstance(lw, dict):
        named = {k: float(v) for k, v in lw.items() if k != "*"}
        if any(v < 0 for v in named.values()) or float(lw.get("*", 0.0)) < 0:
            raise ValueError(f"stage {stage.name!r}: negative language weight in {lw}")
        missing = sorted(k for k in named if k not in present)
        if missing:
            log.warning("stage %s: languages %s have no tokens in the data; dropped from the mix",
                        stage.name, missing)
        raw = {k: v for k, v in named.items() if k in present}
        rest_w = float(lw.get("*", 0.0))
        rest = {k: v for k, v in present.items() if k not in named}
        rest_total = sum(rest.values())
        if stage.rest_split not in ("tokens", "equal"):
            raise ValueError(f"stage {stage.name!r}: rest_split must be 'tokens' or 'equal', "
                             f"got {stage.rest_split!r}")
        if rest_w > 0 and rest_total > 0:
            for k, v in rest.items():
                raw[k] = rest_w * (v / rest_total if stage.rest_split == "tokens" else 1.0 / len(rest))
    else:
        raise ValueError(f"stage {stage.name!r}: lang_weights must be 'natural' or a mapping, got {lw!r}")
    raw = {k: v for k, v in raw.items() if v > 0}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"stage {stage.name!r}: no language with a positive weight has data")
    return {k: v / total for k, v in raw.items()}


def _source_multiplier(stage: StageConfig, s: StreamInfo) -> float:
    sw = stage.source_weights or {}
    for key in (s.source, s.tier, "*"):
        if key in sw:
            v = float(sw[key])
            if v < 0:
                raise ValueError(f"stage {stage.name!r}: negative source weight {key}={v}")
            return v
    return 1.0


def stream_weights(stage: StageConfig, streams: Sequence[StreamInfo]) -> np.ndarray:
    """Target share of the stage's windows per stream (float64 [n_streams], sums to 1).

    Raises ``ValueError`` if a language with a positive share has only zero-weight streams.
    """
    lang_tokens: dict[str, int] = {}
    for s in streams:
        lang_tokens[s.lang] = lang_tokens.get(s.lang, 0) + max(s.tokens, 0)
    shares = language_shares(stage, lang_tokens)
    w = np.zeros(len(streams), dtype=np.float64)
    for lang, share in shares.items():
        idx = [i for i, s in enumerate(streams) if s.lang == lang]
        inner = np.array([max(streams[i].tokens, 0) * _source_multiplier(stage, streams[i]) for i in idx])
        if inner.sum() <= 0:
            raise ValueError(f"stage {stage.name!r}: language {lang} has share {share:.3f} "
                             f"but all its streams have zero weight")
        w[idx] = share * inner / inner.sum()
    return w / w.sum()


# --------------------------------------------------------------------------------------------
# loader


@dataclass
class Batch:
    """One optimizer step's data for this rank.

    ``input_ids``/``labels``: int64 [grad_accum, micro_batch_size, seq_len];
    ``lang_ids``: int64 [grad_accum, micro_batch_size], index into ``CurriculumLoader.languages``;
    ``step``: the optimizer step this batch is for (0-based); ``stage``: curriculum stage index.
    """

    step: int
    stage: int
    input_ids: torch.Tensor
    labels: torch.Tensor
    lang_ids: torch.Tensor


@dataclass
class ValidationSet:
    """Held-out windows: ``input_ids``/``labels`` int64 [N, seq_len] (labels ``-100`` where a
    language had fewer than ``seq_len + 1`` held-out tokens), ``lang_ids`` int64 [N]."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    lang_ids: torch.Tensor
    languages: list[str] = field(default_factory=list)


class CurriculumLoader:
    """Deterministic, resumable curriculum loader for one data-parallel rank.

    Args:
        tokens_dir: directory with ``manifest.json`` and the token shards.
        seq_len: tokens per sample (each sample packs ``seq_len + 1`` tokens).
        global_batch_size: sequences per optimizer step over all ranks.
        micro_batch_size: sequences per forward on one rank.
        stages: curriculum stages (default :func:`training.train_config.paper_curriculum`).
        total_steps: planned optimizer steps (resolves ``start_fraction``).
        dp_rank, dp_world: this rank and the data-parallel world size.
        seed: seeds all permutations.
        val_fraction, val_files_per_stream, val_max_windows_per_lang: validation hold-out, see
            :class:`training.train_config.DataSection`.
        prefetch: batches made ahead on a background thread (bounded queue); 0 = on the
            calling thread.
        cache_bytes: bound on the decoded Parquet row groups held at once (bytes; one row group
            more may be held while it is used).

    Raises ``ValueError`` if ``global_batch_size`` is not a multiple of
    ``micro_batch_size * dp_world``, if stage starts are not increasing from 0, or if a mix
    weight is invalid.
    """

    def __init__(
        self,
        tokens_dir: str | Path,
        *,
        seq_len: int,
        global_batch_size: int,
        micro_batch_size: int,
        stages: Sequence[StageConfig] | None = None,
        total_steps: int = 1,
        dp_rank: int = 0,
        dp_world: int = 1,
        seed: int = 0,
        val_fraction: float = 0.0,
        val_files_per_stream: int = 1,
        val_max_windows_per_lang: int = 16,
        prefetch: int = 2,
        cache_bytes: int = 256 * 2**20,
    ):
        if global_batch_size % (micro_batch_size * dp_world):
            raise ValueError(
                f"global_batch_size={global_batch_size} is not a multiple of "
                f"micro_batch_size*world = {micro_batch_size}*{dp_world}"
            )
        if not (0 <= dp_rank < dp_world):
            raise ValueError(f"dp_rank={dp_rank} outside world of {dp_world}")
        self.manifest = load_manifest(tokens_dir)
        self.streams = self.manifest.streams
        self.languages = self.manifest.languages
        self._lang_index = {l: i for i, l in enumerate(self.languages)}
        self.seq_len = int(seq_len)
        self.global_batch_size = int(global_batch_size)
        self.micro_batch_size = int(micro_batch_size)
        self.dp_rank, self.dp_world = int(dp_rank), int(dp_world)
        self.local_batch_size = self.global_batch_size // self.dp_world
        self.grad_accum = self.local_batch_size // self.micro_batch_size
        self.seed = int(seed)
        self.stages = list(stages) if stages else paper_curriculum()
        tokens_per_step = self.global_batch_size * self.seq_len
        self.stage_starts = [s.resolve_start(total_steps=total_steps, tokens_per_step=tokens_per_step)
                             for s in self.stages]
        if self.stage_starts[0] != 0:
            raise ValueError(f"the first curriculum stage must start at step 0, got {self.stage_starts[0]}")
        if any(b <= a for a, b in zip(self.stage_starts, self.stage_starts[1:])):
            raise ValueError(f"curriculum stage starts must increase strictly, got {self.stage_starts}")
        self.stage_weights = [stream_weights(s, self.streams) for s in self.stages]

        # validation hold-out
        self.val_fraction = float(val_fraction)
        self.val_max_windows_per_lang = int(val_max_windows_per_lang)
        self._val_rows: list[dict[int, np.ndarray]] = []
        for s in self.streams:
            excl: dict[int, np.ndarray] = {}
            if self.val_fraction > 0:
                for fidx in range(min(val_files_per_stream, len(s.files))):
                    rows = select_validation_rows(_read_ids(s.files[fidx]), self.val_fraction)
                    if len(rows):
                        excl[fidx] = rows
            self._val_rows.append(excl)
        self._stats = ReadStats()
        self._cache = _GroupCache(cache_bytes, self._stats)
        self._readers = [_StreamReader(s, self.seed, self._val_rows[s.index], self._stats)
                         for s in self.streams]
        self.prefetch = int(prefetch)
        self._thread = None
        self._sched_step = 0
        self._stage = 0
        self._counts = np.zeros(len(self.streams), dtype=np.int64)
        self._consumed = self._schedule_state()

    # ---- schedule -----------------------------------------------------------------------
    def stage_at(self, step: int) -> int:
        """Curriculum stage index in force at optimizer step ``step``."""
        idx = 0
        for i, start in enumerate(self.stage_starts):
            if step >= start:
                idx = i
        return idx

    def target_language_shares(self, stage: int) -> dict[str, float]:
        """Configured token share per language in ``stage`` (sums to 1)."""
        out: dict[str, float] = {}
        for s, w in zip(self.streams, self.stage_weights[stage]):
            if w > 0:
                out[s.lang] = out.get(s.lang, 0.0) + float(w)
        return out

    def _pick(self, weights: np.ndarray) -> int:
        with np.errstate(divide="ignore"):
            finish = np.where(weights > 0, (self._counts + 1) / np.where(weights > 0, weights, 1), np.inf)
        i = int(np.argmin(finish))
        self._counts[i] += 1
        return i

    @property
    def step(self) -> int:
        """Optimizer steps whose batches :meth:`next_batch` has returned (the resume point)."""
        return self._consumed["step"]

    def _produce(self) -> tuple[Batch, dict[str, Any]]:
        """Schedule the next global batch, read this rank's windows; returns the batch and
        the loader state after it. Runs on the prefetch thread when ``prefetch > 0``."""
        step = self._sched_step
        stage = self.stage_at(step)
        if stage != self._stage:
            log.info("curriculum: step %d enters stage %d (%s)", step, stage, self.stages[stage].name)
            self._stage = stage
            self._counts[:] = 0
        weights = self.stage_weights[stage]
        lo = self.dp_rank * self.local_batch_size
        hi = lo + self.local_batch_size
        n = self.seq_len + 1
        langs = np.empty(self.local_batch_size, dtype=np.int64)
        wanted: dict[tuple[str, int], list[tuple[int, int, int, int, int]]] = {}
        for j in range(self.global_batch_size):
            si = self._pick(weights)
            mine = lo <= j < hi
            pieces = self._readers[si].take(n, materialize=mine)
            if mine:
                at = 0
                for path, g, row, a, b in pieces:
                    wanted.setdefault((path, g), []).append((j - lo, at, row, a, b))
                    at += b - a
                langs[j - lo] = self._lang_index[self.streams[si].lang]
        windows = np.empty((self.local_batch_size, n), dtype=np.int64)
        for key in sorted(wanted):  # each row group read once per step (or served by the cache)
            off, val = self._cache.get(*key)
            for w, at, row, a, b in wanted[key]:
                s0 = off[row]
                windows[w, at: at + b - a] = val[s0 + a: s0 + b]
                self._stats.rows_used += 1
        batch = torch.from_numpy(windows)
        shape = (self.grad_accum, self.micro_batch_size, self.seq_len)
        out = Batch(
            step=step,
            stage=stage,
            input_ids=batch[:, :-1].reshape(shape).contiguous(),
            labels=batch[:, 1:].reshape(shape).contiguous(),
            lang_ids=torch.from_numpy(langs).reshape(self.grad_accum, self.micro_batch_size),
        )
        self._sched_step += 1
        return out, self._schedule_state()

    def next_batch(self) -> Batch:
        """The next optimizer step's batch for this rank (see :class:`Batch`).

        With ``prefetch > 0`` the batches are made ``prefetch`` steps ahead on a background
        thread (bounded queue); the batches and :meth:`state_dict` are the same as without.

        Raises:
            Whatever reading the shards raised on the prefetch thread (re-raised here).
        """
        if self.prefetch <= 0:
            batch, state = self._produce()
        else:
            if self._thread is None:
                self._start_prefetch()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._thread = None
                raise item
            batch, state = item
        self._consumed = state
        return batch

    def _start_prefetch(self) -> None:
        import queue
        import threading

        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        stop, q = self._stop, self._queue

        def run() -> None:
            while not stop.is_set():
                try:
                    item: Any = self._produce()
                except BaseException as e:  # handed to the training thread
                    item = e
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, BaseException):
                    return

        self._thread = threading.Thread(target=run, name="curriculum-prefetch", daemon=True)
        self._thread.start()
        # stop the thread before interpreter shutdown (no Parquet read racing the teardown)
        import atexit
        import weakref

        ref = weakref.ref(self)
        atexit.register(lambda: (lambda ld: ld is not None and ld.close())(ref()))

    def close(self) -> None:
        """Stop the prefetch thread (batches already made are dropped; the loader state stays
        at the last batch returned, so :meth:`next_batch` continues from there)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._restore(self._consumed)

    def __iter__(self):
        while True:
            yield self.next_batch()

    @property
    def read_stats(self) -> ReadStats:
        """Counters of what this rank read (see :class:`ReadStats`)."""
        return self._stats

    # ---- state ----------------------------------------------------------------------------
    def _schedule_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "step": self._sched_step,
            "stage": self._stage,
            "seed": self.seed,
            "stage_counts": {s.key: int(c) for s, c in zip(self.streams, self._counts)},
            "streams": {
                s.key: {"epoch": r.pos.epoch, "file_pos": r.pos.file_pos, "offset": r.pos.offset}
                for s, r in zip(self.streams, self._readers)
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable loader state after the last batch returned (identical on every
        rank; batches prefetched but not yet returned are not part of it)."""
        return json.loads(json.dumps(self._consumed))

    def _restore(self, state: dict[str, Any]) -> None:
        self._sched_step = int(state["step"])
        self._stage = int(state["stage"])
        self._counts[:] = 0
        for s, r in zip(self.streams, self._readers):
            self._counts[s.index] = int(state["stage_counts"].get(s.key, 0))
            p = state["streams"].get(s.key)
            r.pos = StreamPosition(**p) if p else StreamPosition()
        self._consumed = self._schedule_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output. Raises ``ValueError`` if the seed differs or the
        state names a stream this manifest lacks (a different corpus)."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"loader state was made with seed {state['seed']}, this loader has {self.seed}")
        keys = {s.key for s in self.streams}
        unknown = sorted(set(state["streams"]) - keys)
        if unknown:
            raise ValueError(f"loader state names streams {unknown} absent from the manifest")
        self.close()
        self._restore(state)

    # ---- validation ---------------------------------------------------------------------------
    def validation_set(self) -> ValidationSet:
        """Pack each language's held-out documents (stream order, then file, then row) into up
        to ``val_max_windows_per_lang`` windows of ``seq_len + 1`` tokens. Languages with no
        held-out documents are absent."""
        per_lang: dict[str, list[np.ndarray]] = {}
        cache = _GroupCache(0, ReadStats())  # one row group at a time
        for s in self.streams:
            for fidx, rows in sorted(self._val_rows[s.index].items()):
                path = s.files[fidx]
                md = pq.ParquetFile(path).metadata
                starts = np.concatenate([[0], np.cumsum([md.row_group(g).num_rows
                                                         for g in range(md.num_row_groups)])])
                for r in rows:  # only the row groups holding held-out rows are read
                    g = int(np.searchsorted(starts, r, side="right")) - 1
                    offsets, values = cache.get(path, g)
                    rr = int(r - starts[g])
                    per_lang.setdefault(s.lang, []).append(values[offsets[rr]: offsets[rr + 1]].copy())
        n = self.seq_len + 1
        inputs, labels, langs = [], [], []
        for lang in self.languages:
            if lang not in per_lang:
                continue
            toks = np.concatenate(per_lang[lang]).astype(np.int64)
            k = min(len(toks) // n, self.val_max_windows_per_lang)
            if k == 0:  # shorter than one window: pad, mask the padded labels
                w = np.full(n, self.manifest.pad_id, dtype=np.int64)
                w[: len(toks)] = toks
                lab = w[1:].copy()
                lab[max(len(toks) - 1, 0):] = IGNORE_INDEX
                inputs.append(w[:-1][None]); labels.append(lab[None])
                langs.append(self._lang_index[lang])
                continue
            w = toks[: k * n].reshape(k, n)
            inputs.append(w[:, :-1]); labels.append(w[:, 1:])
            langs.extend([self._lang_index[lang]] * k)
        if not inputs:
            return ValidationSet(torch.zeros(0, self.seq_len, dtype=torch.long),
                                 torch.zeros(0, self.seq_len, dtype=torch.long),
                                 torch.zeros(0, dtype=torch.long), list(self.languages))
        return ValidationSet(
            torch.from_numpy(np.concatenate(inputs)).contiguous(),
            torch.from_numpy(np.concatenate(labels)).contiguous(),
            torch.tensor(langs, dtype=torch.long),
            list(self.languages),
        )


def write_token_shards(
    out_dir: str | Path,
    docs: dict[tuple[str, str], Iterable[Sequence[int]]],
    *,
    vocab_size: int,
    eos_id: int,
    tiers: dict[str, str] | None = None,
    docs_per_file: int = 0,
    bos_id: int = 1,
    pad_id: int = 0,
    row_group_size: int | None = None,
    n_tokens: bool = False,
) -> Path:
    """Write token shards + ``manifest.json`` in the tokenize stage's format (for tests and
    benchmarks; the real ones come from the ``tokenize`` stage). ``docs`` maps (lang, source)
    to token lists *without* EOS (it is appended here); ``docs_per_file`` splits a stream into
    several ``part-*.parquet`` files (0 = one file); ``row_group_size`` rows per Parquet row
    group (default: pyarrow's); ``n_tokens`` adds an ``n_tokens int32`` column (tokens per row,
    EOS included) that the loader reads instead of decoding ``input_ids`` to learn row lengths.
    Returns ``out_dir``."""
    import pyarrow as pa

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = []
    for (lang, source), items in docs.items():
        items = [list(map(int, d)) + [eos_id] for d in items]
        sub = out / f"lang={lang}" / f"source={source}"
        sub.mkdir(parents=True, exist_ok=True)
        per = docs_per_file or max(len(items), 1)
        files = []
        for part, start in enumerate(range(0, len(items), per)):
            chunk = items[start : start + per]
            cols = {
                "id": pa.array([f"{lang}-{source}-{start + i}" for i in range(len(chunk))], pa.string()),
                "input_ids": pa.array(chunk, pa.list_(pa.int32())),
            }
            if n_tokens:
                cols["n_tokens"] = pa.array([len(d) for d in chunk], pa.int32())
            name = f"part-{part:05d}.parquet"
            pq.write_table(pa.table(cols), sub / name, row_group_size=row_group_size)
            files.append(f"lang={lang}/source={source}/{name}")
        streams.append({
            "lang": lang, "source": source, "tier": (tiers or {}).get(source, "web"),
            "documents": len(items), "tokens": sum(len(d) for d in items), "files": files,
        })
    manifest = {"tokenizer": "", "vocab_size": vocab_size, "bos_id": bos_id, "eos_id": eos_id,
                "pad_id": pad_id, "streams": streams, "total_tokens": sum(s["tokens"] for s in streams)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
