"""SearchIndex: exact search equals brute force, filters, saving and loading, IVF, CLI, the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ximgctx.cli.inference import main as cli_main
from ximgctx.data.io import write_posts
from ximgctx.inference import Predictor, SearchIndex, SearchIndexError

from .._inference_fixtures import make_posts, model_dir, tiny_model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_pretrained(model_dir(), device="cpu")


@pytest.fixture(scope="module")
def posts() -> list:
    return make_posts(30, seed=4)


@pytest.fixture(scope="module")
def index(predictor: Predictor, posts: list) -> SearchIndex:
    return SearchIndex.build(predictor, posts, mode="exact")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_topk(corpus: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    sims = _unit(corpus) @ _unit(q[None])[0]  # (n,)
    order = np.argsort(-sims, kind="stable")[:k]
    return [int(rows[i]) for i in order], sims[order]


def test_exact_topk_equals_bruteforce_numpy(predictor: Predictor, posts: list, index: SearchIndex) -> None:
    fused = predictor.embed(posts)  # (n, H)
    images = predictor.embed(posts, space="image")  # (n, D), null embedding where no image
    has_image = np.array([p.image is not None for p in posts])
    rng = np.random.default_rng(0)
    spaces = {
        "fused": (fused, np.arange(len(posts))),
        "image": (images[has_image], np.flatnonzero(has_image)),
    }
    assert index.indexes["image"].ntotal == has_image.sum() < len(posts)  # posts without image are left out
    for space, (corpus, rows) in spaces.items():
        queries = np.concatenate([corpus[:3], rng.standard_normal((3, corpus.shape[1]))]).astype(np.float32)
        for q in queries:
            hits = index.search_vectors(q[None], space=space, k=7)[0]
            want_rows, want_scores = _numpy_topk(corpus, rows, q, 7)
            assert [h.id for h in hits] == [posts[r].id for r in want_rows], space
            np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=0, atol=1e-5)
            assert [h.rank for h in hits] == list(range(1, 8))


def test_filtered_search_is_topk_among_matching_posts(
    predictor: Predictor, posts: list, index: SearchIndex
) -> None:
    preds = predictor.predict(posts)
    fused = predictor.embed(posts)
    # filters built from what the (random) model predicts, so each keeps some posts and drops others
    count = {
        lab: sum(lab in p.tasks["intent"].labels for p in preds)
        for lab in ("joke", "protest", "threat", "meme")
    }
    a, b = sorted((lab for lab, c in count.items() if 0 < c < len(posts)), key=lambda lab: -count[lab])[:2]
    m = preds[0].tasks["meaning"].labels[0]
    dropped = []
    for where in ([f"intent={b}"], [f"intent={a}", f"intent={b}"], [f"intent={a}", f"meaning={m}"]):
        clauses: dict[str, set[str]] = {}
        for c in where:
            t, lab = c.split("=")
            clauses.setdefault(t, set()).add(lab)
        ok = np.array([all(set(p.tasks[t].labels) & labs for t, labs in clauses.items()) for p in preds])
        assert ok.sum() > 0, where
        dropped.append(int(len(posts) - ok.sum()))
        rows = np.flatnonzero(ok)
        q = fused[0]
        hits = index.search_vectors(q[None], space="fused", k=5, where=where)[0]
        want_rows, _ = _numpy_topk(fused[rows], rows, q, 5)
        assert [h.id for h in hits] == [posts[r].id for r in want_rows], where
        for h in hits:
            assert all(set(h.labels[t]) & labs for t, labs in clauses.items())
    assert max(dropped) > 0  # some filter really filtered
    with pytest.raises(ValueError, match="'threats' is not a label of 'intent'"):
        index.search_vectors(fused[:1], k=3, where=["intent=threats"])
    with pytest.raises(ValueError, match="a filter is task=label"):
        index.search_vectors(fused[:1], k=3, where=["threat"])


def test_query_kinds(predictor: Predictor, posts: list, index: SearchIndex) -> None:
    # more like this: the post's own vector, the post itself left out
    fused = predictor.embed(posts)
    hits = index.search_post(posts[2].id, k=5)
    want_rows, _ = _numpy_topk(fused, np.arange(len(posts)), fused[2], 6)
    assert [h.id for h in hits] == [posts[r].id for r in want_rows if r != 2][:5]
    # text query: CLIP text embedding against CLIP image embeddings
    images = predictor.embed(posts, space="image")
    has_image = np.flatnonzero([p.image is not None for p in posts])
    q = predictor.encode_texts(["a red circle"])[0]
    want_rows, _ = _numpy_topk(images[has_image], has_image, q, 4)
    assert [h.id for h in index.search_text("a red circle", k=4)] == [posts[r].id for r in want_rows]
    # text query in the fused space: a text-only post through the model
    from ximgctx import Post

    qf = predictor.embed([Post(id="q", text="a red circle")])[0]
    want_rows, _ = _numpy_topk(fused, np.arange(len(posts)), qf, 4)
    assert [h.id for h in index.search_text("a red circle", k=4, space="fused")] == [
        posts[r].id for r in want_rows
    ]
    # image query: the indexed image finds its own post first
    assert index.search_image(posts[0].image, k=1)[0].id == posts[0].id
    with pytest.raises(SearchIndexError, match="cannot be used: image: missing"):
        index.search_image(str(Path(posts[0].image).with_name("nowhere.png")), k=1)
    with pytest.raises(SearchIndexError, match="no vector in the 'image' space"):
        index.search_post(posts[4].id, space="image")  # every fifth post has no image
    with pytest.raises(KeyError):
        index.search_post("no-such-post")


def test_save_and_load_round_trip(
    predictor: Predictor, posts: list, index: SearchIndex, tmp_path: Path
) -> None:
    path = index.save(tmp_path / "idx")
    assert sorted(p.name for p in path.iterdir()) == [
        "fused.faiss",
        "image.faiss",
        "index.json",
        "manifest.json",
        "posts.parquet",
    ]
    loaded = SearchIndex.load(path, predictor=predictor)
    for pid in (posts[0].id, posts[7].id):
        assert [(h.id, h.score, h.labels) for h in loaded.search_post(pid, k=5, where=["intent=joke"])] == [
            (h.id, h.score, h.labels) for h in index.search_post(pid, k=5, where=["intent=joke"])
        ]
    assert loaded.search_text("cat", k=3) == index.search_text("cat", k=3)
    meta = json.loads((path / "index.json").read_text())
    assert meta["model"]["manifest_sha256"] == predictor.model_digest and meta["posts"] == len(posts)
    # another model's predictor is refused: its vectors are not comparable
    other = Predictor(tiny_model(seed=1), device="cpu")
    other.model_digest = "0" * 64
    with pytest.raises(SearchIndexError, match="not comparable"):
        SearchIndex.load(path, predictor=other)
    # an altered file is refused
    (path / "posts.parquet").write_bytes((path / "posts.parquet").read_bytes()[:-8] + b"xxxxxxxx")
    with pytest.raises(SearchIndexError, match=r"posts.parquet: SHA-256 .* does not match manifest.json"):
        SearchIndex.load(path)


def test_ivf_with_all_cells_equals_exact_and_recall_is_measured() -> None:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((20, 32))
    x = (centres[rng.integers(0, 20, 2000)] + 0.5 * rng.standard_normal((2000, 32)) / np.sqrt(32)).astype(
        np.float32
    )
    records = [{"id": f"v{i}", "labels": {"tag": ["a"] if i % 3 == 0 else []}} for i in range(len(x))]
    vectors = {"fused": (np.arange(len(x)), x)}
    exact = SearchIndex.from_vectors(records, vectors, tasks={"tag": ["a"]}, mode="exact")
    ivf = SearchIndex.from_vectors(records, vectors, tasks={"tag": ["a"]}, mode="ivf", nlist=16, nprobe=2)
    q = x[:50] + 0.01
    truth = exact.search_vectors(q, k=10)
    every_cell = ivf.search_vectors(q, k=10, nprobe=16)
    assert [[h.id for h in hs] for hs in every_cell] == [[h.id for h in hs] for hs in truth]
    some = ivf.search_vectors(q, k=10, nprobe=1)
    recall = np.mean(
        [len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(some, truth, strict=True)]
    )
    assert 0.3 < recall <= 1.0
    filtered = ivf.search_vectors(q, k=10, nprobe=16, where=["tag=a"])
    assert [[h.id for h in hs] for hs in filtered] == [
        [h.id for h in hs] for hs in exact.search_vectors(q, k=10, where=["tag=a"])
    ]


def test_index_and_search_cli(posts: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "posts.jsonl"
    write_posts(posts, data)
    out = tmp_path / "idx"
    assert (
        cli_main(
            [
                "--model",
                str(model_dir()),
                "--data",
                str(data),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--mode",
                "ivf",
                "--nlist",
                "2",
                "--no-progress",
                # the fixture's posts are not governed; the refusal is tested in tests/test_purge.py
                "--allow-ungoverned",
            ],
            command="index",
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli_main(["--index", str(out), "--post", posts[1].id, "-k", "3", "--nprobe", "2"], command="search")
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["space"] == "fused" and result["mode"] == "ivf" and len(result["data"]) == 3
    assert posts[1].id not in [h["id"] for h in result["data"]]
    assert (
        cli_main(
            ["--index", str(out), "--post", posts[1].id, "-k", "3", "--where", "intent=joke"],
            command="search",
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["data"] and all("joke" in h["labels"]["intent"] for h in result["data"])
    assert (
        cli_main(
            ["--index", str(out), "--text", "a blue square", "-k", "2", "--device", "cpu"], command="search"
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["space"] == "image" and len(result["data"]) == 2
    assert cli_main(["--index", str(out), "--post", "nope"], command="search") == 2
    assert "no post 'nope' in the index" in capsys.readouterr().err


def test_search_benchmark_reports_recall() -> None:
    from ximgctx.bench import search
    from ximgctx.cli.bench import build_parser

    argv = [
        "search",
        "--n",
        "3000",
        "--dim",
        "32",
        "--clusters",
        "30",
        "--queries",
        "50",
        "--nprobes",
        "1,1000",
    ]
    result = search.run(build_parser().parse_args(argv))
    by_probe = {r["nprobe"]: r for r in result["ivf"]}
    assert result["nlist"] == max(1, min(int(4 * 3000**0.5), 3000 // 39))
    assert by_probe[result["nlist"]]["recall@10"] == 1.0  # visiting every cell is exact
    assert 0 < by_probe[1]["recall@10"] <= 1.0 and by_probe[1]["qps"] > 0
