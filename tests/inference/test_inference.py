"""Predictor, batch prediction (one process and two), and the inference benchmark's paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.inference import Predictor
from ximgctx.inference.batch import output_format

from .._inference_fixtures import bad_posts, make_posts, model_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(model_dir(), device="cpu")


@pytest.fixture(scope="module")
def posts() -> list:
    return make_posts(14, seed=1)


def _scores(preds: list, task: str) -> np.ndarray:
    return np.array([list(p.tasks[task].scores.values()) for p in preds])


def test_predictor_equals_model_forward(predictor: Predictor, posts: list) -> None:
    preds = predictor.predict(posts, batch_size=len(posts), embeddings=True)
    model = predictor.model
    batch = model.processor(posts)
    with torch.no_grad():
        out = model(batch)
        expected = model.scores(out.logits, calibrated=True)
    assert [p.id for p in preds] == [p.id for p in posts]
    for spec in model.config.tasks:
        want = expected[spec.name].numpy()
        np.testing.assert_allclose(_scores(preds, spec.name), want, rtol=0, atol=1e-6)
        thresholds = model.heads[spec.name].thresholds.numpy()
        for p, row in zip(preds, want, strict=True):
            if spec.kind == "multiclass":
                assert p.tasks[spec.name].labels == [spec.labels[int(row.argmax())]]
            else:
                assert p.tasks[spec.name].labels == [
                    lab for lab, s, t in zip(spec.labels, row, thresholds, strict=True) if s >= t
                ]
    np.testing.assert_allclose(np.stack([p.embedding for p in preds]), out.fused.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        predictor.embed(posts, batch_size=len(posts)), out.fused.numpy(), rtol=0, atol=1e-6
    )
    # the labels are not all the same: the test would be weak if every post got identical predictions
    assert len({tuple(p.tasks["intent"].labels) for p in preds}) > 1


def test_results_do_not_depend_on_batch_size(predictor: Predictor, posts: list) -> None:
    posts = posts[:9]
    runs = {bs: predictor.predict(posts, batch_size=bs, embeddings=True) for bs in (1, 4, len(posts))}
    ref = runs[len(posts)]
    for bs, preds in runs.items():
        assert [p.id for p in preds] == [p.id for p in posts], bs
        for spec in predictor.model.config.tasks:
            np.testing.assert_allclose(
                _scores(preds, spec.name),
                _scores(ref, spec.name),
                rtol=0,
                atol=2e-5,
                err_msg=f"batch size {bs}, task {spec.name}",
            )
        np.testing.assert_allclose(
            np.stack([p.embedding for p in preds]), np.stack([p.embedding for p in ref]), rtol=0, atol=2e-5
        )


def test_prefetch_and_bf16_autocast_paths(predictor: Predictor, posts: list) -> None:
    ref = predictor.predict(posts, batch_size=4)
    ahead = Predictor(predictor.model, device="cpu", prefetch=True).predict(posts, batch_size=4)
    assert [p.to_dict() for p in ahead] == [p.to_dict() for p in ref]  # collating ahead changes nothing
    bf16 = Predictor(predictor.model, device="cpu", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    low = bf16.predict(posts, batch_size=4)
    for spec in predictor.model.config.tasks:
        np.testing.assert_allclose(_scores(low, spec.name), _scores(ref, spec.name), rtol=0, atol=0.1)


def test_bad_inputs_each_get_a_result_naming_their_problem(predictor: Predictor) -> None:
    bad = bad_posts()
    with pytest.warns(RuntimeWarning, match="1000 replies"):
        preds = predictor.predict(bad, batch_size=len(bad))
    assert [p.id for p in preds] == [p.id for p in bad]  # nothing dropped or reordered
    by_id = {p.id: p for p in preds}
    assert by_id["good-0"].problems == [] and by_id["good-1"].problems == []
    corrupt = by_id["corrupt-image"].problems
    assert len(corrupt) == 1 and corrupt[0].startswith(("image: corrupt", "image: truncated")), corrupt
    assert not by_id["corrupt-image"].inputs["image"] and by_id["corrupt-image"].inputs["text"]
    assert len(by_id["missing-image"].problems) == 1
    assert by_id["missing-image"].problems[0].startswith("image: missing"), by_id["missing-image"].problems
    assert by_id["empty-text"].problems == ["text: empty: the learned null text embedding stands in for it"]
    assert not by_id["empty-text"].inputs["text"] and by_id["empty-text"].inputs["image"]
    assert by_id["thousand-replies"].problems == ["replies: capped: 1000 replies, kept the first 8"]
    assert by_id["thousand-replies"].inputs["replies"]
    for p in preds:  # every post is fully scored
        for spec in predictor.model.config.tasks:
            s = np.array(list(p.tasks[spec.name].scores.values()))
            assert s.shape == (spec.num_labels,) and np.isfinite(s).all()
    # the bad posts do not change a good post's scores (compared with it predicted alone)
    alone = predictor.predict([bad[0]])[0]
    for spec in predictor.model.config.tasks:
        np.testing.assert_allclose(
            list(by_id["good-0"].tasks[spec.name].scores.values()),
            list(alone.tasks[spec.name].scores.values()),
            rtol=0,
            atol=2e-5,
        )


def _manifest(folder: Path, posts: list, malformed_at: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "posts.jsonl"
    write_posts(posts, path)
    if malformed_at is not None:  # a broken line every process must skip the same way
        lines = path.read_text().splitlines()
        lines.insert(malformed_at, '{"id": "broken", "text": ')
        path.write_text("\n".join(lines) + "\n")
    return path


def _read(path: Path) -> list[dict]:
    if output_format(path) == "parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_cli_writes_jsonl_and_parquet(predictor: Predictor, posts: list, tmp_path: Path) -> None:
    data = _manifest(tmp_path, posts + list(bad_posts()), malformed_at=3)
    with pytest.warns(RuntimeWarning):
        assert (
            cli_main(
                [
                    "--model",
                    str(model_dir()),
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / "p.jsonl"),
                    "--batch-size",
                    "5",
                    "--device",
                    "cpu",
                    "--no-progress",
                ],
                command="predict",
            )
            == 0
        )
        assert (
            cli_main(
                [
                    "--model",
                    str(model_dir()),
                    "--data",
                    str(data),
                    "--out",
                    str(tmp_path / "p.parquet"),
                    "--batch-size",
                    "5",
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--embeddings",
                ],
                command="predict",
            )
            == 0
        )
    jsonl, parquet = _read(tmp_path / "p.jsonl"), _read(tmp_path / "p.parquet")
    want_ids = [p.id for p in posts] + [p.id for p in bad_posts()]
    assert [r["id"] for r in jsonl] == want_ids
    assert [r["id"] for r in parquet] == want_ids
    assert not (tmp_path / "p.jsonl.parts").exists()
    for a, b in zip(jsonl, parquet, strict=True):
        assert a["tasks"] == b["tasks"] and a["problems"] == b["problems"] and a["inputs"] == b["inputs"]
        assert len(b["embedding"]) == predictor.model.config.fusion.hidden_dim
    direct = predictor.predict(posts[:10], batch_size=5)  # the same first two batches as the CLI's
    for rec, pred in zip(jsonl[:10], direct, strict=True):
        assert rec == pred.to_dict()
    with pytest.raises(ValueError, match="must end in .jsonl or .parquet"):
        output_format(tmp_path / "p.csv")


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_sharded_predict_equals_one_process(posts: list, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    all_posts = posts + list(bad_posts())
    data = _manifest(tmp_path, all_posts, malformed_at=5)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    args = [
        "predict",
        "--model",
        str(model_dir()),
        "--data",
        str(data),
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--barrier-timeout",
        "120",
    ]
    two = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "ximgctx.cli",
            *args,
            "--out",
            str(tmp_path / "two.jsonl"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-4000:]
    with pytest.warns(RuntimeWarning, match="1000 replies"):  # one process, in this one
        assert cli_main([*args[1:], "--out", str(tmp_path / "one.jsonl")], command="predict") == 0
    summary = json.loads(two.stderr[two.stderr.index("{") : two.stderr.rindex("}") + 1])
    assert summary["processes"] == 2 and summary["skipped_records"] == 1
    a, b = _read(tmp_path / "one.jsonl"), _read(tmp_path / "two.jsonl")
    ids = [p.id for p in all_posts]
    assert [r["id"] for r in a] == ids
    assert [r["id"] for r in b] == ids  # same set, same input order: no duplicates, none missing
    for ra, rb in zip(a, b, strict=True):
        assert ra["problems"] == rb["problems"] and ra["inputs"] == rb["inputs"]
        for task, t in ra["tasks"].items():
            np.testing.assert_allclose(
                list(t["scores"].values()), list(rb["tasks"][task]["scores"].values()), rtol=0, atol=2e-5
            )
            assert t["labels"] == rb["tasks"][task]["labels"]


def test_inference_benchmark_paths_agree(tmp_path: Path) -> None:
    """The benchmark's four paths run, naive and shipped compute the same scores, and the text cache changes
    no score (bit for bit) while reporting its hits and bytes within its bounds."""
    from ximgctx.bench import inference
    from ximgctx.cli.bench import build_parser

    args = build_parser().parse_args(
        [
            "inference",
            "--arch",
            "ximgctx-tiny",
            "--n",
            "4",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--replies",
            "4",
            "--image-size",
            "64",
            "--device",
            "cpu",
        ]
    )
    result = inference.run(args)
    assert set(result["posts_per_second"]) == {
        "bare_open_clip",
        "naive_context",
        "shipped",
        "shipped_no_cache",
    }
    cache = result["text_cache"]
    assert cache["scores_bit_identical_with_and_without_cache"] is True
    assert cache["hits"] > 0 and 0 < cache["bytes"] <= cache["max_bytes"]
    assert cache["entries"] <= cache["max_entries"]
    assert len(result["text_cache_per_round"]) == 1 and 0 <= result["reply_repeat_rate"] <= 1
    assert all(v > 0 for v in result["posts_per_second"].values())
    assert result["naive_vs_shipped_max_abs_score_diff"] < 1e-4
    tokens = result["text_tower_tokens_per_post"]
    assert tokens["shipped"] < tokens["naive_context"]
