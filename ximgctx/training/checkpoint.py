"""Checkpoints that are either complete or invisible.

A checkpoint is written by every process with ``accelerator.save_state`` into a temporary folder
``.tmp-step-00000100``. Only when every process is done does the main process add the trainer state, the
resolved config and a ``COMPLETE`` marker (written last), then rename the folder to ``step-00000100``.
Older checkpoints are removed only after that rename. ``latest`` is the highest step among folders that
are named ``step-*`` *and* hold the marker, so a run killed mid-write (a leftover ``.tmp-*`` folder, or a
``step-*`` folder copied without its marker) can never be resumed from.

The layout assumes a file system shared by all processes (one machine, or a shared mount across
machines), as ``accelerator.save_state`` itself does for the model weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COMPLETE_MARKER", "CheckpointError", "CheckpointManager", "read_trainer_state"]

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
_NAME = re.compile(r"^step-(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint to resume from is missing or incomplete."""


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The loop's counters saved in a checkpoint folder."""
    try:
        return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{path}: no {TRAINER_STATE}; not a checkpoint written by ximgctx training"
        ) from e


class CheckpointManager:
    """Writes, lists, resolves and prunes the checkpoints under ``root``.

    Args:
        root: the checkpoints folder (``<output_dir>/checkpoints``).
        keep_last: how many complete checkpoints to keep.
    """

    def __init__(self, root: str | Path, keep_last: int = 2) -> None:
        self.root = Path(root)
        self.keep_last = keep_last

    @staticmethod
    def name(step: int) -> str:
        return f"step-{step:08d}"

    @staticmethod
    def is_complete(path: Path) -> bool:
        return bool(_NAME.match(path.name)) and (path / COMPLETE_MARKER).is_file()

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and self.is_complete(p)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def resolve(self, resume: str | Path) -> Path:
        """``"latest"`` (the newest complete checkpoint) or an explicit checkpoint folder."""
        if str(resume) == "latest":
            path = self.latest()
            if path is None:
                raise CheckpointError(f"--resume latest: no complete checkpoint under {self.root}")
            return path
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder")
        if not (path / COMPLETE_MARKER).is_file():
            raise CheckpointError(
                f"--resume {resume}: the checkpoint is incomplete (no {COMPLETE_MARKER} marker; "
                f"it was interrupted while being written). Use --resume latest."
            )
        return path

    def clean_partial(self) -> list[Path]:
        """Remove leftovers of interrupted writes (main process, before training starts)."""
        removed = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and p.name.startswith(".tmp-step-"):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def save(
        self, accelerator: Any, step: int, *, trainer_state: dict[str, Any], config: dict[str, Any]
    ) -> Path:
        """Write checkpoint ``step`` collectively; every process must call this."""
        final = self.root / self.name(step)
        tmp = self.root / f".tmp-{self.name(step)}"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # every rank: its RNG states; main: weights, optimizer, scheduler
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _fsync_write(tmp / TRAINER_STATE, json.dumps(trainer_state, indent=2, sort_keys=True) + "\n")
            _fsync_write(tmp / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            _fsync_write(tmp / COMPLETE_MARKER, json.dumps({"step": step, "files": files}) + "\n")
            if final.exists():  # the same step written again (a resumed run): swap, then drop the old one
                old = self.root / f".old-{self.name(step)}"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
            for old in self.complete()[: -self.keep_last]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final
