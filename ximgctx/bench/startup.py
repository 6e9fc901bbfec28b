"""How fast the command line answers: every command's ``--help`` and a real command's start-up.

Each figure comes from a fresh interpreter (nothing cached from the caller): its wall time seen from outside
and its peak RSS (``VmHWM``, which starts afresh at exec), beside bare ``python -c "import torch, open_clip"``
measured the same way in the same run. ``--help`` rows also say whether torch was imported (it must not be).
The start-up row runs ``ximgctx predict`` on a tiny saved model and a one-post JSONL, and reports its wall
time as a ratio to the bare import (targets: every ``--help`` under 1 s; start-up at most 1.1x the import).
Each row also gives the child's CPU seconds (user + system, from the parent's ``RUSAGE_CHILDREN``), and the
summary their ratio: on a machine other processes keep busy, wall time grows with their load, CPU time much
less, so the CPU ratio says what the command adds when the wall ratio is blurred.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: runs in the fresh interpreter: ``--import MODULES`` (the baseline) or ximgctx's CLI with the given argv.
_CHILD = """
import contextlib, io, json, resource, sys
out, argv = sys.argv[1], sys.argv[2:]
rc = 0
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        if argv[0] == "--import":
            for name in argv[1].split(","):
                __import__(name)
        else:
            from ximgctx.cli import main
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
heavy = ("torch", "numpy", "open_clip", "transformers", "fastapi", "sqlalchemy", "presidio_analyzer", "faiss")
try:  # VmHWM starts afresh at exec; ru_maxrss would keep the forked parent's size
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    peak_kb = int(hwm.split()[1])
except (OSError, IndexError):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(out, "w") as f:
    imported = [m for m in heavy if m in sys.modules]
    json.dump({"rc": rc, "peak_rss_mb": peak_kb / 1024, "imported": imported}, f)
"""

HELP_TARGET_S = 1.0
STARTUP_TARGET_RATIO = 1.1


def fresh_process(argv: list[str], repeats: int = 1) -> dict[str, Any]:
    """``argv`` run ``repeats`` times, each in a new interpreter: median wall time, largest peak RSS, exit
    status and the heavy modules it imported."""
    walls, cpus, rss, last = [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.json"
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(out), *argv], capture_output=True, text=True, check=False
            )
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child (and what it ran) only
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if proc.returncode != 0 or not out.is_file():
                raise RuntimeError(f"{argv} failed in a fresh process:\n{proc.stderr[-4000:]}")
            last = json.loads(out.read_text())
            rss.append(last["peak_rss_mb"])
    return {
        "wall_s": round(statistics.median(walls), 4),
        "cpu_s": round(statistics.median(cpus), 4),
        "peak_rss_mb": round(max(rss), 1),
        "rc": last["rc"],
        "imported": last["imported"],
        "torch_imported": "torch" in last["imported"],
    }


def _tiny_model_and_post(folder: Path) -> tuple[Path, Path]:
    """A tiny saved model (the package's tiny architecture) and a one-post JSONL beside it."""
    import torch

    from ximgctx import ContextModel, EncoderConfig, FusionConfig, ModelConfig, TaskSpec

    torch.manual_seed(0)
    tasks = [TaskSpec("intent", ["joke", "protest", "threat", "meme"], kind="multilabel")]
    config = ModelConfig(tasks=tasks, encoder=EncoderConfig(arch="ximgctx-tiny-32"), fusion=FusionConfig())
    model_dir = ContextModel(config).save_pretrained(folder / "model")
    posts = folder / "one.jsonl"
    posts.write_text(json.dumps({"id": "p1", "text": "when monday hits", "replies": ["lol same"]}) + "\n")
    return Path(model_dir), posts


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [c.strip() for c in (args.commands or "").split(",") if c.strip()]
    # every command and sub-command, as ``ximgctx bench cli`` passes them from ximgctx.cli (a higher layer)
    prefixes = [prefix for prefix in args.command_prefixes if not wanted or prefix[0] in wanted]
    bare = ["--import", "torch,open_clip"]
    baseline = fresh_process(bare, args.repeats)
    rows = []
    for prefix in [[]] * (not wanted) + prefixes:
        row = fresh_process([*prefix, "--help"], args.repeats)
        rows.append({"command": " ".join(["ximgctx", *prefix, "--help"]), **row})
    result: dict[str, Any] = {
        "baseline": {"command": 'python -c "import torch, open_clip"', **baseline},
        "help": rows,
        "repeats": args.repeats,
    }
    slowest = max(rows, key=lambda r: r["wall_s"])
    result["summary"] = {
        "help_max_s": slowest["wall_s"],
        "help_slowest": slowest["command"],
        "help_max_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "help_under_target": all(r["wall_s"] < HELP_TARGET_S for r in rows),
        "help_torch_imported": [r["command"] for r in rows if r["torch_imported"]],
        "help_target_s": HELP_TARGET_S,
    }
    if not args.no_startup:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, posts = _tiny_model_and_post(Path(tmp))
            argv = [
                "predict",
                "--model",
                str(model_dir),
                "--data",
                str(posts),
                "--out",
                str(Path(tmp) / "p.jsonl"),
            ]
            argv += ["--device", "cpu", "--no-progress"]
            # interleaved with the bare import, so that a busy machine's changing load falls on both alike
            pairs = [(fresh_process(bare), fresh_process(argv)) for _ in range(args.repeats)]
        startup = {**pairs[-1][1], "wall_s": statistics.median(s["wall_s"] for _, s in pairs)}
        startup["cpu_s"] = statistics.median(s["cpu_s"] for _, s in pairs)
        startup["peak_rss_mb"] = max(s["peak_rss_mb"] for _, s in pairs)
        baseline["wall_s_interleaved"] = statistics.median(b["wall_s"] for b, _ in pairs)
        baseline["cpu_s_interleaved"] = statistics.median(b["cpu_s"] for b, _ in pairs)
        result["baseline"]["wall_s_interleaved"] = baseline["wall_s_interleaved"]
        result["baseline"]["cpu_s_interleaved"] = baseline["cpu_s_interleaved"]
        if startup["rc"] != 0:
            raise RuntimeError(f"ximgctx {' '.join(argv)} exited {startup['rc']}")
        ratio = startup["wall_s"] / baseline["wall_s_interleaved"]
        result["startup"] = {"command": "ximgctx predict (tiny model, one post)", **startup}
        result["summary"].update(
            {
                "startup_ratio": round(ratio, 3),
                # user + system CPU seconds, same pairs: what the command adds to the import's work, which
                # other processes on a busy machine disturb less than wall time (the target is on wall time)
                "startup_cpu_ratio": round(startup["cpu_s"] / baseline["cpu_s_interleaved"], 3),
                "startup_target_ratio": STARTUP_TARGET_RATIO,
                "startup_under_target": ratio <= STARTUP_TARGET_RATIO,
            }
        )
    return result
