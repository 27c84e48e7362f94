"""The fused pass: consecutive per-document stages run as ONE Spark pass per partition.

Staged, every stage reads the previous stage's parquet, converts it to Arrow, hands it to a
Python worker, and writes parquet again; ``langid`` and ``rules`` each pay that round trip and a
Spark job's fixed costs. Fused (the default, ``fuse: true`` in ``configs/pipeline.yaml``), one
``mapInArrow`` over the first stage's input chains the stages' per-batch callables, the way
datatrove runs a list of blocks in one task: each Arrow batch goes through ``langid``'s
:class:`~pipeline.langid.LangIDBatch`, its kept rows through ``rules``'
:class:`~pipeline.rules.RulesBatch`, and every stage's rows (kept, rejected, quarantined) are
emitted with a ``_stage`` column. That frame is written **once**, partitioned by ``(_stage,
_disposition, reason)``; then each stage, in order, accounts, runs its ``after_write`` and
publishes from its own ``_stage=<name>/`` directory exactly as the staged runner does
(:meth:`pipeline.stage.Stage._finish`): the same ``<stage>/`` output and ``_SUCCESS`` (with the
same fingerprint), ``rejected/stage=<name>/reason=.../``, ``stats/<name>.json`` (plus
``"fused": [stages]``; the first stage's ``seconds`` include the fused pass, a later
stage's only its own accounting and publishing, so they add up to the wall time) and plots. The accounting check stays per stage: a stage's documents in
(the fused pass's input for the first, the previous stage's kept total for the next) must equal
what its rows account for.

What fuses and why the boundaries stay:

* ``langid`` + ``rules`` fuse: both are a per-batch callable over their input with the same
  output columns (rules adds none), so one parquet write holds both stages' rows with their
  exact staged schema. A group fuses only when its stages' output schemas are equal.
* ``ingest`` stays its own pass: it quarantines repeated ids with a window over ``id`` (a
  shuffle), and its output lacks ``lang``/``lang_score``, so its rows could not share the write.
* ``quality`` stays its own pass: (1) when its models are missing it trains them from the
  **published** ``langid/`` output (all documents after langid, in :mod:`pipeline.quality_models`),
  which exists only after the langid pass has seen every document; (2) its ``ppl_bucket``
  cut-offs are percentiles of the run's own scores (:func:`pipeline.quality.choose_cutoffs`), so
  its decision needs a second pass over its scored rows whatever runs before it; its output
  adds ``ppl``/``ppl_bucket``/``quality_score``, so its rows could not share the write without
  adding null columns to the langid and rules outputs.
* ``dedup`` is a shuffle stage; ``shard`` rewrites the corpus layout.

``--stages`` / ``python -m jobs.<stage>`` still run one stage at a time (a fused group needs
every stage of it in the run), and ``fuse: false`` (``--no-fuse``) runs the chain staged. A group
falls back to staged when one of its stages would be skipped (already published for the same
fingerprint).
"""
from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import fs
from pipeline.stage import (KEPT, REJECTED, SparkProgress, Stage, StageContext, _drop_fields, clear_stale_tmp, log,
                            progress_accumulator, published, set_progress_total, stage_log, with_disposition)


class FusedBatches:
    """Picklable: Arrow batches of the first stage's input -> every stage's output rows.

    For each input batch, stage ``i``'s callable runs on the rows stage ``i-1`` kept (with
    ``reason`` and ``_disposition`` dropped, as the staged runner publishes them) and its output
    is yielded with ``_disposition`` (``kept``/``rejected`` from ``reason`` when the stage does
    not set it) and ``_stage`` (the stage name) appended.

    Args:
        names: stage names, in chain order.
        fns: their per-batch callables (``fn(pyarrow.RecordBatch) -> pyarrow.RecordBatch``).
        columns: the output column names every stage yields, in order (before ``_disposition``).
        counter: a pyspark accumulator of input rows (progress), or None.
    """

    def __init__(self, names: list[str], fns: list, columns: list[str], counter=None):
        self.names, self.fns, self.columns, self.counter = list(names), list(fns), list(columns), counter

    def __call__(self, batches):
        last = len(self.fns) - 1
        for b in batches:
            if not b.num_rows:
                continue
            if self.counter is not None:
                self.counter.add(b.num_rows)
            cur = b
            for i, (name, fn) in enumerate(zip(self.names, self.fns)):
                out = fn(cur)
                if "_disposition" in out.schema.names:
                    disp = out.column("_disposition")
                    kept = pc.fill_null(pc.equal(disp, KEPT), False)
                else:
                    kept = pc.is_null(out.column("reason"))
                    disp = pc.if_else(kept, KEPT, REJECTED)
                yield pa.RecordBatch.from_arrays(
                    [out.column(c) for c in self.columns] + [disp, pa.array([name] * out.num_rows, pa.string())],
                    names=self.columns + ["_disposition", "_stage"])
                if i == last:
                    break
                nxt = out.filter(kept)
                if not nxt.num_rows:
                    break
                cur = nxt.select([c for c in nxt.schema.names if c not in ("reason", "_disposition")])


def fusable(stage: Stage) -> bool:
    """Does ``stage`` expose a per-batch callable (``batch_plan``) the fused pass can chain?"""
    return callable(getattr(stage, "batch_plan", None))


def groups(names: list[str], chain: list[str], fuse: bool = True) -> list[list[str]]:
    """Split the stages to run into groups run as one pass: runs of consecutive fusable stages
    (each reading the previous one's output in ``chain``); every other stage alone.

    Args:
        names: stage names to run, in order.
        chain: the configured chain (``config["stages"]``).
        fuse: False: every stage alone (staged).
    """
    from pipeline.registry import get_stage

    out: list[list[str]] = []
    for n in names:
        if (fuse and out and len(out[-1]) >= 1 and fusable(get_stage(n)) and fusable(get_stage(out[-1][-1]))
                and n in chain and chain.index(n) > 0 and chain[chain.index(n) - 1] == out[-1][-1]):
            out[-1].append(n)
        else:
            out.append([n])
    return out


def _would_skip(stage: Stage, ctx: StageContext) -> bool:
    if ctx.force or ctx.fingerprint is None:
        return False
    rec = published(ctx.spark, stage.output_path(ctx))
    return bool(rec) and rec.get("fingerprint") == ctx.fingerprint and fs.exists(
        ctx.spark, ctx.path("stats", f"{stage.name}.json"))


def run_group(stages: list[Stage], ctxs: list[StageContext]) -> dict:
    """Run ``stages`` (consecutive, fusable, each reading the previous) as one fused pass, or
    staged one by one when one of them would be skipped or their output schemas differ.

    Returns:
        ``{stage name: stats}`` as :meth:`pipeline.stage.Stage.run` returns them.

    Raises:
        StageInputMissing: the first stage's input is not published.
        AccountingError: a stage's output does not account for its input.
    """
    if len(stages) == 1:
        return {stages[0].name: stages[0].run(ctxs[0])}
    fp = None
    for i, (st, ctx) in enumerate(zip(stages, ctxs)):
        fp = st.fingerprint(ctx) if i == 0 else st.fingerprint_from(ctx, fp)
        ctx.fingerprint = fp
    # a fused run killed before publishing left its temporary output: removed whichever way we run
    clear_stale_tmp(ctxs[0], "fused-" + "-".join(s.name for s in stages))
    if any(_would_skip(st, ctx) for st, ctx in zip(stages, ctxs)):
        log(f"[{'+'.join(s.name for s in stages)}] not fused: a stage of the group is already published "
            f"for the same input and config; running them one by one")
        return _staged(stages, ctxs)
    label = "+".join(s.name for s in stages)
    first, ctx0 = stages[0], ctxs[0]
    t0 = time.time()
    with stage_log(ctx0.out, "-".join(s.name for s in stages)) as slog:
        log(f"[{label}] fused pass start (input: {ctx0.input_stage})" + (f"; details in {slog.path}" if slog.path else ""))
        with SparkProgress(ctx0.spark, label):
            df_in = first.read_input(ctx0)
            n_in = first.input_count(df_in)
            set_progress_total(n_in)
            log(f"[{label}] {n_in} documents in")
            fns, schemas, schema = [], [], df_in.schema
            for st, ctx in zip(stages, ctxs):
                fn, out_schema = st.batch_plan(ctx, schema)
                fns.append(fn)
                schemas.append(out_schema)
                schema = _drop_fields(out_schema, ("reason", "_disposition"))
            if any(s != schemas[0] for s in schemas[1:]):
                log(f"[{label}] not fused: the stages' output columns differ; running them one by one")
                return _staged(stages, ctxs, already_started=True)
            return _fused(stages, ctxs, df_in, n_in, fns, schemas[0], t0)


def _staged(stages, ctxs, already_started: bool = False) -> dict:
    res = {}
    for st, ctx in zip(stages, ctxs):
        ctx.fingerprint = None  # recomputed from the published input, as a staged run does
        res[st.name] = st.run(ctx)
    return res


def _fused(stages, ctxs, df_in, n_in: int, fns: list, out_schema, t0: float) -> dict:
    import uuid

    from pyspark.sql.types import StringType, StructField, StructType

    ctx0 = ctxs[0]
    spark = ctx0.spark
    names = [s.name for s in stages]
    tmp_name = "fused-" + "-".join(names)
    tmp = ctx0.path("_tmp", f"{tmp_name}-{uuid.uuid4().hex[:12]}")
    cols = [f.name for f in out_schema.fields if f.name != "_disposition"]
    base = StructType([f for f in out_schema.fields if f.name != "_disposition"])
    union = StructType(base.fields + [StructField("_disposition", StringType()), StructField("_stage", StringType())])
    fn = FusedBatches(names, fns, cols, progress_accumulator())
    in_cols = [f.name for f in df_in.schema.fields]
    frame = with_disposition(df_in.select(in_cols).mapInArrow(fn, union))
    frame.write.mode("overwrite").partitionBy("_stage", "_disposition", "reason").parquet(tmp)
    log(f"[{'+'.join(names)}] fused pass written in {time.time() - t0:.1f}s; accounting and publishing each stage")
    stats = {}
    stage_schema = StructType([f for f in frame.schema.fields if f.name != "_stage"])
    n, t_stage = n_in, t0
    for st, ctx in zip(stages, ctxs):
        ctx.fused = names
        log(f"[{st.name}] {n} documents in (fused pass)")
        # seconds: the first stage's include the fused pass, a later one's its own accounting,
        # stats and publishing, so that the stages' seconds add up to the wall time
        stats[st.name] = st._finish(ctx, f"{tmp}/_stage={st.name}", stage_schema, n, t_stage)
        n, t_stage = stats[st.name]["totals"]["kept"], time.time()
    fs.delete(spark, tmp)
    if not fs.list_dir(spark, ctx0.path("_tmp")):
        fs.delete(spark, ctx0.path("_tmp"))
    return stats
