"""Atomic, verifiable ``torch.distributed.checkpoint`` (DCP) checkpoints.

Layout under the checkpoint root::

    step-00000100/            a complete checkpoint
        .metadata, __*.distcp   DCP files: {"model": ..., "optim": ...} (FQN-keyed, sharded)
        train_state.json        step, scheduler, data-loader state, loss guard, world size, ...
        rng/rank00000.pt        torch CPU (+ CUDA) RNG state of each rank
        COMPLETE.json           completion marker: step, world size, size (+ CRC32) of every file
    step-00000200.tmp/        a save in progress (or killed mid-save): never loaded

Saving writes everything into ``step-N.tmp``, then rank 0 writes ``COMPLETE.json`` last and
renames the directory to ``step-N`` (an atomic ``rename`` on POSIX file systems), then deletes
all but the newest ``keep_last`` complete checkpoints and stale ``.tmp`` directories.

Loading (``resume="auto"``) takes the newest ``step-N`` whose marker exists and whose files all
have the recorded sizes (and CRC32s when ``checksum=True``); a truncated or corrupt checkpoint
is reported with the reason and the previous one is used. Model and optimizer state go through
``torch.distributed.checkpoint.state_dict.get_state_dict``/``set_state_dict``, so they are keyed
by parameter name and stored as global tensors: a checkpoint written by N FSDP ranks loads at
any other world size, or into a plain single-process module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

log = logging.getLogger(__name__)

__all__ = ["CheckpointManager", "CheckpointError", "list_checkpoints", "verify_checkpoint"]

MARKER = "COMPLETE.json"
_STEP_RE = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required."""


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _world() -> int:
    return dist.get_world_size() if _dist() else 1


def _barrier() -> None:
    if _dist():
        dist.barrier()


def _crc32(path: Path, chunk: int = 8 << 20) -> int:
    crc = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return crc
            crc = zlib.crc32(b, crc)


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-N`` directory under ``root`` (complete or not, but
    never ``.tmp``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out, reverse=True)


def verify_checkpoint(path: str | Path) -> str | None:
    """``None`` if ``path`` is a complete checkpoint whose files match its marker, else the
    reason (str) it is not usable."""
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        return f"no {MARKER} completion marker (save did not finish)"
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        return f"unreadable {MARKER}: {e}"
    for rel, info in meta.get("files", {}).items():
        f = path / rel
        if not f.is_file():
            return f"file {rel} is missing"
        size = f.stat().st_size
        if size != info["size"]:
            return f"file {rel} has {size} bytes, marker records {info['size']} (truncated?)"
        if "crc32" in info and _crc32(f) != info["crc32"]:
            return f"file {rel} fails its CRC32 check (corrupt)"
    if not (path / ".metadata").is_file():
        return "DCP .metadata file is missing"
    return None


class CheckpointManager:
    """Save and load training checkpoints (see module docstring).

    Args:
        root: checkpoint directory (created on save).
        keep_last: complete checkpoints to keep (>= 1).
        checksum: record and verify a CRC32 of every file (sizes are always checked).
    """

    def __init__(self, root: str | Path, *, keep_last: int = 3, checksum: bool = True):
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.root = Path(root)
        self.keep_last = int(keep_last)
        self.checksum = bool(checksum)

    # ---------------------------------------------------------------------------- save
    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             train_state: dict[str, Any]) -> Path:
        """Write checkpoint ``step-<step>`` atomically (collective: call on every rank).

        ``train_state`` must be JSON-serialisable (rank 0's copy is written). Returns the final
        path. Seconds spent are logged.
        """
        t0 = time.perf_counter()
        rank = _rank()
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f"step-{step:08d}.tmp"
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        _barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        with warnings.catch_warnings():  # single process: DCP warns it "assumes" no_dist
            warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
        (tmp / "rng").mkdir(exist_ok=True)
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, tmp / "rng" / f"rank{rank:05d}.pt")
        _barrier()
        if rank == 0:
            state = dict(train_state)
            state.update(step=int(step), world_size=_world(), saved_at=time.time())
            (tmp / "train_state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
            files = {}
            for f in sorted(tmp.rglob("*")):
                if f.is_file():
                    rel = str(f.relative_to(tmp))
                    info = {"size": f.stat().st_size}
                    if self.checksum:
                        info["crc32"] = _crc32(f)
                    files[rel] = info
            marker = {"step": int(step), "world_size": _world(), "files": files}
            part = tmp / (MARKER + ".part")
            part.write_text(json.dumps(marker, indent=1))
            os.replace(part, tmp / MARKER)
            if final.exists():  # re-saving the same step (e.g. a rerun): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
            self._prune(step)
        _barrier()
        log.info("checkpoint: saved %s in %.2f s", final, time.perf_counter() - t0)
        return final

    def _prune(self, current: int) -> None:
        complete = [(s, p) for s, p in list_checkpoints(self.root) if (p / MARKER).is_file()]
        for _, p in complete[self.keep_last :]:
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob("step-*.tmp"):
            shutil.rmtree(p, ignore_errors=True)

    # ---------------------------------------------------------------------------- load
    def _candidates(self, resume: str) -> list[Path]:
        if resume == "never":
            return []
        if resume == "auto":
            return [p for _, p in list_checkpoints(self.root)]
        p = Path(resume)
        if not p.is_dir():
            raise CheckpointError(f"checkpoint.resume={resume!r}: no such checkpoint directory")
        return [p]

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             resume: str = "auto") -> dict[str, Any] | None:
        """Load the newest usable checkpoint into ``model``/``optimizer`` (collective).

        ``resume``: ``auto`` (newest valid under ``root``, falling back past incomplete or
        corrupt ones with a warning naming the reason), ``never``, or a checkpoint path (must be
        valid, else :class:`CheckpointError`). Restores this rank's RNG state (rank 0's when
        the checkpoint had fewer ranks). Returns the ``train_state`` dict (plus ``"path"``), or
        ``None`` when there is nothing to resume from.
        """
        explicit = resume not in ("auto", "never")
        for path in self._candidates(resume):
            reason = verify_checkpoint(path) if _rank() == 0 else None
            if _dist():
                box = [reason]
                dist.broadcast_object_list(box, src=0)
                reason = box[0]
            if reason is None:
                try:
                    model_sd, optim_sd = get_state_dict(model, optimizer)
                    sd = {"model": model_sd, "optim": optim_sd}
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
                        dcp.load(sd, checkpoint_id=str(path))
                    set_state_dict(model, optimizer, model_state_dict=sd["model"],
                                   optim_state_dict=sd["optim"])
                except Exception as e:  # noqa: BLE001 - any read failure means "corrupt"
                    reason = f"DCP load failed: {type(e).__name__}: {e}"
            if reason is not None:
                msg = f"checkpoint {path} is not usable: {reason}"
                if explicit:
                    raise CheckpointError(msg)
                log.warning("%s; falling back to the previous checkpoint", msg)
                print(f"[checkpoint] WARNING {msg}; falling back to the previous checkpoint", flush=True)
                continue
            state = json.loads((path / "train_state.json").read_text())
            rng_dir = path / "rng"
            own = rng_dir / f"rank{_rank():05d}.pt"
            rng_file = own if own.is_file() else rng_dir / "rank00000.pt"
            if rng_file.is_file():
                rng = torch.load(rng_file, weights_only=True)
                torch.set_rng_state(rng["cpu"])
                if "cuda" in rng and torch.cuda.is_available():
                    torch.cuda.set_rng_state(rng["cuda"])
            state["path"] = str(path)
            print(f"[checkpoint] resumed from {path} (step {state['step']}, written by "
                  f"{state.get('world_size')} rank(s), now {_world()})", flush=True)
            return state
        return None
