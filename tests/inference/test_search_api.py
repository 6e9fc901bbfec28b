"""One search API: the same filter syntax and the same answer from ``SearchIndex.search``, ``ximgctx search``
(on the index, or ``--url`` to a running service) and ``POST /v1/search``; no file path in an index or an
answer."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from ximgctx.cli.inference import main as cli_main
from ximgctx.errors import InputError
from ximgctx.inference import Predictor, SearchIndex
from ximgctx.inference.search import parse_where
from ximgctx.serve import ServeConfig, create_app

from .._inference_fixtures import make_posts, model_dir
from .._serve_fixtures import API_KEY, running

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = {"intent": ["joke", "protest", "threat", "meme"], "meaning": ["literal", "ironic", "symbolic"]}
HIT_KEYS = {"rank", "id", "score", "labels", "text", "has_image"}


@pytest.fixture(scope="module")
def posts() -> list:
    return make_posts(20, seed=11, folder="search-api")


@pytest.fixture(scope="module")
def saved(posts: list, tmp_path_factory: pytest.TempPathFactory) -> Path:
    predictor = Predictor.from_pretrained(model_dir(), device="cpu")
    return SearchIndex.build(predictor, posts).save(tmp_path_factory.mktemp("api") / "index")


@pytest.fixture(scope="module")
def index(saved: Path) -> SearchIndex:
    return SearchIndex.load(saved, predictor=Predictor.from_pretrained(model_dir(), device="cpu"))


@pytest.fixture(scope="module")
def server(saved: Path):
    app = create_app(model_dir(), config=ServeConfig(api_keys=[API_KEY]), index=saved)
    with running(app) as url:
        yield url


def _same(a: dict, b: dict) -> bool:
    """The same answer; scores to 1e-5 (the server batches on its own thread)."""
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    scores = [h.pop("score") for h in a["data"]], [h.pop("score") for h in b["data"]]
    return a == b and scores[0] == pytest.approx(scores[1], abs=1e-5)


def _post(url: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/search", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )


def test_where_forms_are_one_filter() -> None:
    want = {"intent": {"protest", "threat"}, "meaning": {"ironic"}}
    assert parse_where(["intent=protest", "intent=threat", "meaning=ironic"], TASKS) == want
    assert parse_where({"intent": ["protest", "threat"], "meaning": "ironic"}, TASKS) == want
    assert parse_where("intent=protest", TASKS) == {"intent": {"protest"}}  # one string is one clause
    assert parse_where({}, TASKS) == parse_where(None, TASKS) == {}
    for bad, message in (
        ("intent", "task=label"),
        (["intent=nope"], "'nope' is not a label of 'intent'"),
        ({"topic": "x"}, "no task 'topic'"),
        ({"intent": [1]}, "labels are strings"),
        ([3], "task=label"),
    ):
        with pytest.raises(InputError, match=message):
            parse_where(bad, TASKS)


def test_python_answer_shape_and_filter_forms(index: SearchIndex, posts: list) -> None:
    result = index.search("a red circle", k=4, where="intent=joke")
    same = index.search("a red circle", k=4, where={"intent": ["joke"]})
    assert (
        result.to_dict()
        == same.to_dict()
        == index.search("a red circle", k=4, where=["intent=joke"]).to_dict()
    )
    answer = result.to_dict()
    assert set(answer) == {"object", "model", "query", "space", "where", "mode", "data"}
    assert answer["object"] == "list" and answer["query"] == {"text": "a red circle"}
    assert answer["space"] == "image" and answer["where"] == {"intent": ["joke"]}
    assert answer["model"] == Path(model_dir()).name
    assert 0 < len(result.data) <= 4 and all(set(h) == HIT_KEYS for h in answer["data"])
    assert all("joke" in h.labels["intent"] for h in result.data)
    assert [h.rank for h in result.data] == list(range(1, len(result.data) + 1))
    # the query kinds answer the same as the lower-level methods
    assert result.data == index.search_text("a red circle", k=4, where=["intent=joke"])
    more = index.search(post_id=posts[3].id, k=3)
    assert more.space == "fused" and more.data == index.search_post(posts[3].id, k=3)
    by_image = index.search(image=Path(posts[0].image).read_bytes(), k=1)
    assert by_image.data[0].id == posts[0].id and by_image.query["image"].startswith("sha256:")
    assert index.search(image=posts[0].image, k=1).to_dict() == by_image.to_dict()  # a file or its bytes
    assert [h.has_image for h in index.search(post_id=posts[0].id, k=19).data] == [
        next(p for p in posts if p.id == h.id).image is not None
        for h in index.search(post_id=posts[0].id, k=19).data
    ]
    with pytest.raises(InputError, match="exactly one of text, image or post_id"):
        index.search("x", post_id=posts[0].id)


def test_index_folder_holds_no_absolute_path(saved: Path, posts: list) -> None:
    meta = json.loads((saved / "index.json").read_text())
    assert not os.path.isabs(meta["model"]["path"])
    assert (saved / meta["model"]["path"]).resolve() == Path(model_dir()).resolve()
    image_dirs = {str(Path(p.image).parent) for p in posts if p.image}
    for name in ("index.json", "manifest.json"):
        text = (saved / name).read_text()
        assert str(Path(model_dir()).resolve()) not in text and not any(d in text for d in image_dirs)
    table = pq.read_table(saved / "posts.parquet")
    assert "image" not in table.column_names and "has_image" in table.column_names
    assert not any(d in str(table.to_pylist()) for d in image_dirs)
    # the model is found from the index folder, whichever folder the command runs in
    assert SearchIndex.load(saved).model["path"] == str(Path(model_dir()).resolve())


def test_http_answers_what_python_answers(server: str, index: SearchIndex, posts: list) -> None:
    png = Path(posts[0].image).read_bytes()
    cases = [
        (
            {"text": "a blue square", "k": 3, "where": "intent=joke"},
            index.search("a blue square", k=3, where="intent=joke"),
        ),
        (
            {"text": "a blue square", "k": 3, "where": ["intent=joke"]},
            index.search("a blue square", k=3, where="intent=joke"),
        ),
        (
            {"text": "a blue square", "k": 3, "where": {"intent": "joke"}},
            index.search("a blue square", k=3, where="intent=joke"),
        ),
        (
            {"post_id": posts[2].id, "k": 4, "where": {"meaning": ["literal", "ironic"]}},
            index.search(post_id=posts[2].id, k=4, where=["meaning=literal", "meaning=ironic"]),
        ),
        (
            {"image": "data:image/png;base64," + base64.b64encode(png).decode(), "k": 2},
            index.search(image=png, k=2),
        ),
    ]
    for body, local in cases:
        r = _post(server, body)
        assert r.status_code == 200, r.text
        answer, want = r.json(), local.to_dict()
        assert answer.pop("model").startswith("ximgctx@") and want.pop("model")
        assert answer["data"] and _same(answer, want), body
    r = _post(server, {"text": "x", "where": "intent=nope"})
    assert r.status_code == 400 and "'nope' is not a label of 'intent'" in r.json()["error"]["message"]
    r = _post(server, {"post_id": "no-such-post"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cli_answers_what_http_answers_and_talks_to_a_server(
    server: str, saved: Path, posts: list, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def cli(*argv: str) -> dict:
        assert cli_main(list(argv), command="search") == 0, capsys.readouterr().err
        return json.loads(capsys.readouterr().out)

    local = cli(
        "--index",
        str(saved),
        "--text",
        "a blue square",
        "-k",
        "3",
        "--where",
        "intent=joke",
        "--device",
        "cpu",
    )
    as_json = cli(
        "--index",
        str(saved),
        "--text",
        "a blue square",
        "-k",
        "3",
        "--where",
        '{"intent": ["joke"]}',
        "--device",
        "cpu",
    )
    assert local == as_json and set(local["data"][0]) == HIT_KEYS
    monkeypatch.setenv("XIMGCTX_API_KEY", API_KEY)
    for base in (server, server + "/v1", server + "/"):
        remote = cli("--url", base, "--text", "a blue square", "-k", "3", "--where", "intent=joke")
        assert remote.pop("model").startswith("ximgctx@")
        assert _same(remote, {k: v for k, v in local.items() if k != "model"})
    remote = cli("--url", server, "--image", posts[0].image, "-k", "1")
    assert remote["data"][0]["id"] == posts[0].id
    remote = cli("--url", server, "--post", posts[1].id, "-k", "2")
    assert remote["space"] == "fused" and posts[1].id not in [h["id"] for h in remote["data"]]
    # the server's errors come back as one line
    assert cli_main(["--url", server, "--post", "nope"], command="search") == 2
    assert "answered 404: no post 'nope' in the index" in capsys.readouterr().err
    monkeypatch.setenv("XIMGCTX_API_KEY", "wrong")
    assert cli_main(["--url", server, "--post", posts[1].id], command="search") == 2
    assert "answered 401" in capsys.readouterr().err
