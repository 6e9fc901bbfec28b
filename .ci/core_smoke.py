"""Smoke test of the core install (`pip install ximgctx`, no extras), run by .ci/core_smoke.sh in its venv.

Builds the tiny model, trains one step on a few generated ContextBench posts, predicts, saves and loads with
equal outputs; checks that no extra's package is importable there and that asking for an extra's feature
fails with one line naming it. Exits non-zero (an AssertionError's traceback) on any failure.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

#: packages only the extras bring; none may be importable in the core venv
EXTRA_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "presidio_analyzer",
    "presidio_anonymizer",
    "phonenumbers",
    "tldextract",
    "faiss",
    "crowdkit",
    "matplotlib",
    "tensorboard",
    "tensorboardX",
)


def check_core_only() -> None:
    present = [m for m in EXTRA_ONLY if importlib.util.find_spec(m) is not None]
    assert not present, f"the core install brought packages that belong to extras: {present}"
    import ximgctx

    assert Path(ximgctx.__file__).resolve().parent.parent.name == "site-packages", (
        f"ximgctx comes from {ximgctx.__file__}, not from the installed wheel"
    )


def check_missing_extras(tmp: Path) -> None:
    """Each extra's feature, asked for without it: one line naming the extra and the pip command."""
    from ximgctx._extras import MissingExtraError

    def fails(extra: str, call) -> None:  # noqa: ANN001
        try:
            call()
        except MissingExtraError as e:
            msg = str(e)
            assert e.extra == extra and "\n" not in msg and f"pip install 'ximgctx[{extra}]'" in msg, msg
            print(f"  missing extra, as expected: {msg}")
            return
        raise AssertionError(f"no MissingExtraError for the {extra!r} extra")

    def govern() -> None:
        from ximgctx.governance import govern

        govern([])

    def search() -> None:
        import numpy as np

        from ximgctx.inference.search import _make_index

        _make_index(np.zeros((2, 4), np.float32), np.arange(2), "exact", None)

    def plots() -> None:
        from ximgctx.evaluation.report import write_report

        write_report({"tasks": {}}, tmp / "report", plots=True)

    def serve() -> None:
        import ximgctx.serve.app  # noqa: F401

    def queue() -> None:
        import ximgctx.queue  # noqa: F401

    fails("governance", govern)
    fails("search", search)
    fails("plots", plots)
    fails("serve", serve)
    fails("queue", queue)


def smoke(tmp: Path) -> None:
    import numpy as np

    from ximgctx import ContextModel
    from ximgctx.contextbench import generate
    from ximgctx.data.io import load_posts
    from ximgctx.inference.predictor import Predictor
    from ximgctx.training import train

    generate(tmp / "bench", seed=0, n_train=8, n_val=4, n_test=4, n_compositional=4, image_size=32)
    posts = load_posts(tmp / "bench" / "test.jsonl")
    experiment = {
        "model": {
            "tasks": "contextbench",
            "encoder": {"arch": "ximgctx-tiny"},
            "fusion": {"kind": "attention", "hidden_dim": 32, "heads": 2, "layers": 1},
            "lora": {"r": 2, "alpha": 4.0, "targets": ["attn"]},
        },
        # ContextBench is synthetic: no personal data to govern (and govern needs the governance extra)
        "data": {
            "train": str(tmp / "bench" / "train.jsonl"),
            "val": str(tmp / "bench" / "val.jsonl"),
            "allow_ungoverned": True,
        },
        "train": {
            "output_dir": str(tmp / "run"),
            "batch_size": 4,
            "max_steps": 1,
            "eval_batch_size": 4,
            "progress_bar": False,
            "tensorboard": True,  # the default: without the extra, one warning and no tracker
        },
    }
    result = train(experiment)
    assert result.steps == 1 and result.model_dir is not None, result
    print(f"  trained {result.steps} step -> {result.model_dir}")

    model = ContextModel.from_pretrained(result.model_dir)
    first = Predictor(model, device="cpu").predict(posts, embeddings=True)
    assert len(first) == len(posts) and all(p.tasks for p in first)
    model.save_pretrained(tmp / "saved")
    loaded = ContextModel.from_pretrained(tmp / "saved")
    second = Predictor(loaded, device="cpu").predict(posts, embeddings=True)
    for a, b in zip(first, second, strict=True):
        assert a.embedding is not None and b.embedding is not None
        assert np.array_equal(a.embedding, b.embedding), f"{a.id}: embeddings differ after save/load"
        assert {k: v for k, v in a.to_dict().items() if k != "embedding"} == {
            k: v for k, v in b.to_dict().items() if k != "embedding"
        }, f"{a.id}: predictions differ after save/load"
    print(f"  predicted {len(first)} posts; save_pretrained/from_pretrained gives equal outputs")


def main() -> int:
    start = time.time()
    check_core_only()
    print("core install: no extra's package is importable")
    with tempfile.TemporaryDirectory() as tmp:
        check_missing_extras(Path(tmp))
        smoke(Path(tmp))
    leaked = sorted(m for m in EXTRA_ONLY if m in sys.modules)
    assert not leaked, f"the smoke test imported packages of extras: {leaked}"
    print(f"core smoke test: ok in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
