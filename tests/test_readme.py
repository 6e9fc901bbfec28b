"""Every fenced code block of README.md runs as written, top to bottom, in one temporary folder, as a new user
would run them from a checkout (``configs/`` is there; ``ximgctx`` and ``python`` are the test's own).

A block's first line may say what it needs:

* ``# fixture: posts.jsonl, cat.png, my-model, openai/clip-vit-base-patch32 (...)``: files this test creates
  before the block runs (a few posts in the record format with images; a small PNG; a tiny saved model; a tiny
  CLIP in a Hugging Face cache under that hub id, read offline). A file an earlier block wrote is kept.
* ``# server: ...``: a block that starts a server; it runs in the background (its own process group, stopped
  when this module ends) and the next blocks run once ``/readyz`` answers.
* ``# not run: REASON``: a block that installs packages, needs other machines or is a reference card;
  it is still checked (shell syntax with ``bash -n``, Python with ``compile``, every ``ximgctx CMD`` is a
  real command).

``json`` blocks are parsed as post records. Nothing reaches the network: ``HF_HUB_OFFLINE=1``, and the server
binds 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = {"python", "bash", "sh", "console"}
FIXTURES = {"posts.jsonl", "cat.png", "my-model", "openai/clip-vit-base-patch32"}
PORT = 8000  # the README's port
SEARCH_KEYS = {"object", "model", "query", "space", "where", "mode", "data"}


@dataclass
class Block:
    n: int
    lang: str
    code: str
    heading: str
    line: int

    @property
    def directive(self) -> tuple[str, str]:
        """``(kind, value)`` of the first line's ``# fixture:`` / ``# server:`` / ``# not run:``."""
        first = self.code.splitlines()[0] if self.code.strip() else ""
        m = re.match(r"#\s*(fixture|server|not run):\s*(.*)$", first)
        return (m.group(1), m.group(2)) if m else ("", "")

    @property
    def fixtures(self) -> list[str]:
        kind, value = self.directive
        if kind != "fixture":
            return []
        return [f.split("(")[0].strip() for f in re.split(r",\s*(?![^()]*\))", value) if f.strip()]

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.heading}, {self.lang})"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    out, heading = [], ""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.strip("# \n")
        m = re.match(r"^```(\w*)\s*$", line)
        if m:
            start = i
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            out.append(Block(len(out), m.group(1), "".join(lines[i + 1 : j]), heading, start + 1))
            i = j
        i += 1
    return out


BLOCKS = readme_blocks()


# ------------------------------------------------------------------------------------------------ fixtures
def _png(path: Path, color: tuple[int, int, int], size: int = 32) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (240, 240, 240))
    ImageDraw.Draw(img).ellipse((6, 6, size - 6, size - 6), fill=color)
    img.save(path)


def make_fixture(name: str, world: Path) -> None:
    if name == "cat.png" and not (world / name).exists():
        _png(world / name, (200, 120, 40))
    elif name == "posts.jsonl" and not (world / name).exists():
        (world / "images").mkdir(exist_ok=True)
        objects, meanings, intents = (
            ["cat", "dog", "sign", "crowd"],
            ["literal", "ironic", "symbolic"],
            ["joke", "protest", "threat", "meme"],
        )
        with open(world / name, "w", encoding="utf-8") as f:
            for i in range(20):
                _png(world / "images" / f"p{i}.png", (40 * (i % 6), 200 - 9 * i, 30 + 10 * (i % 5)))
                record = {
                    "id": f"p{i}",
                    "image": f"images/p{i}.png",
                    "text": ["when monday hits", "see you all saturday", "never again", "this sign though"][
                        i % 4
                    ],
                    "replies": [{"text": "lol same", "author": f"u{i}"}, "count me in"][: i % 3],
                    "labels": {
                        "objects": [objects[i % 4]],
                        "meaning": meanings[i % 3],
                        "intent": [intents[i % 4]],
                    },
                    "meta": {"visibility": "public", "opt_out": False, "author": f"a{i}", "lang": "en"},
                }
                f.write(json.dumps(record) + "\n")
    elif name == "my-model" and not (world / name).exists():
        from .helpers import tiny_model

        tiny_model("concat").save_pretrained(world / name)
    elif name == "openai/clip-vit-base-patch32":
        from .hf_tiny import make_tiny_clip

        snap = world / "hf-cache" / "models--openai--clip-vit-base-patch32" / "snapshots" / ("0" * 40)
        if not snap.exists():
            make_tiny_clip(snap)
            (snap.parents[1] / "refs").mkdir(exist_ok=True)
            (snap.parents[1] / "refs" / "main").write_text("0" * 40)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("readme")
    (root / "configs").symlink_to(ROOT / "configs")  # the README runs in a checkout
    state = {"root": root, "servers": []}
    yield state
    for proc in state["servers"]:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group, started below
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _env(world: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_CACHE=str(world / "hf-cache"),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
        NO_COLOR="1",
    )
    env.pop("XIMGCTX_API_KEY", None)
    return env


def _python_exe(world: Path) -> None:
    """``python`` on PATH is this interpreter (a bare interpreter's folder may hold python3 only)."""
    shim = world / ".bin"
    if not (shim / "python").exists():
        shim.mkdir(exist_ok=True)
        (shim / "python").symlink_to(sys.executable)
        if not shutil.which("ximgctx", path=str(Path(sys.executable).parent)):
            (shim / "ximgctx").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ximgctx.cli "$@"\n')
            (shim / "ximgctx").chmod(0o755)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _check_not_run(block: Block) -> None:
    from ximgctx.cli import COMMANDS

    if block.lang == "python":
        compile(block.code, str(block), "exec")
    else:
        done = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True)
        assert done.returncode == 0, f"{block}: not valid shell: {done.stderr}"
    for cmd in re.findall(r"(?:^|[\s;&|(])ximgctx\s+([a-z][\w-]*)", block.code):
        assert cmd in COMMANDS, f"{block}: 'ximgctx {cmd}' is not a command"


# ----------------------------------------------------------------------------------------------- the test
def test_readme_blocks_are_all_known_kinds() -> None:
    langs = {b.lang for b in BLOCKS}
    assert langs <= RUN | {"json", ""}, langs
    for b in BLOCKS:
        if b.lang in RUN:
            assert all(f in FIXTURES for f in b.fixtures), f"{b}: unknown fixture in {b.fixtures}"
    assert sum(b.directive[0] != "not run" for b in BLOCKS if b.lang in RUN) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b.line}-{b.lang or 'text'}")
def test_readme_block_runs(block: Block, world: dict) -> None:
    root: Path = world["root"]
    if block.lang == "json":
        from ximgctx.data.record import post_from_dict

        post = post_from_dict(json.loads(block.code))
        assert post.id and post.labels
        return
    if block.lang not in RUN:
        return  # a text block (the layout)
    kind, value = block.directive
    if kind == "not run":
        assert value.strip(), f"{block}: say why it is not run"
        _check_not_run(block)
        return
    for name in block.fixtures:
        make_fixture(name, root)
    _python_exe(root)
    env = _env(root)
    env["PATH"] = str(root / ".bin") + os.pathsep + env["PATH"]
    suffix = ".py" if block.lang == "python" else ".sh"
    script = root / f"block-{block.line}{suffix}"
    script.write_text(block.code, encoding="utf-8")
    argv = [sys.executable, str(script)] if block.lang == "python" else ["bash", "-e", str(script)]
    if kind == "server":
        assert _port_free(PORT), f"{block}: port {PORT} on 127.0.0.1 is taken; the README's server needs it"
        log = open(root / f"server-{block.line}.log", "wb")  # noqa: SIM115 - kept open for the server's life
        proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        world["servers"].append(proc)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"{block}: the server exited:\n" + (root / log.name).read_text()[-3000:]
            )
            try:
                if httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        pytest.fail(f"{block}: the server was not ready within 600 s")
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (
        f"{block} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    check = CHECKS.get((block.heading, block.lang))
    if check is not None:
        check(root, done.stdout)


# ------------------------------------------------------------------------------- what some blocks promise
def _hf_models(root: Path, out: str) -> None:
    from transformers import CLIPModel

    assert (root / "my-model" / "hf" / "config.json").is_file()  # the transformers backend's own folder
    assert CLIPModel.from_pretrained(str(root / "my-clip")).config.projection_dim == 24  # no ximgctx needed


def _train(root: Path, out: str) -> None:
    result = json.loads((root / "runs" / "x" / "train_result.json").read_text())
    assert result["steps"] == 20 and result["data"]["dropped_labels"] == {}
    report = json.loads((root / "runs" / "x" / "eval" / "report.json").read_text())
    assert report["oracle"] is True and report["oracle_missing"] is None
    assert len([line for line in out.splitlines() if line.startswith('{"id"')]) == 2  # predict | head -n 2


def _search(root: Path, out: str) -> None:
    answers = [json.loads(part) for part in re.split(r"(?m)^(?=\{)", out) if part.strip()]
    assert len(answers) == 2 and all(set(a) == SEARCH_KEYS for a in answers)
    # a model trained for 20 steps predicts few labels: what is asserted is that hits obey the filter
    assert all("protest" in h["labels"]["intent"] for h in answers[0]["data"])
    assert answers[1]["where"] == {"meaning": ["ironic", "symbolic"]} and answers[1]["query"]["post_id"]
    assert all(set(h["labels"]["meaning"]) & {"ironic", "symbolic"} for h in answers[1]["data"])
    index = json.loads((root / "runs" / "index" / "index.json").read_text())
    assert not os.path.isabs(index["model"]["path"])


#: (heading, language) -> a check of what the block wrote and printed
CHECKS = {
    ("Hugging Face models", "python"): _hf_models,
    ("Train your own model", "bash"): _train,
    ("Search (SearchIndex)", "bash"): _search,
}
