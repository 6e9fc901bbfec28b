"""The post record and its loader: validation names file, line and field."""

from __future__ import annotations

import json
import os

import pytest

from ximgctx import Post, Reply, load_posts, write_posts
from ximgctx.data.record import LoadReport, PostValidationError, post_from_dict


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_canonical_record_round_trip(tmp_path) -> None:
    record = {
        "id": "p17",
        "image": "images/p17.png",
        "text": "see you all saturday",
        "replies": [{"text": "count me in", "author": "u9"}, "lol"],
        "labels": {"intent": ["protest"], "meaning": "literal", "objects": ["sign", "crowd"]},
        "meta": {"visibility": "public", "opt_out": False, "author": "u3", "lang": "en"},
    }
    path = _write(tmp_path / "posts.jsonl", [json.dumps(record)])
    (post,) = load_posts(path)
    assert post.image == str(tmp_path / "images/p17.png")
    assert post.replies == [Reply("count me in", "u9"), Reply("lol")]
    assert post.labels["objects"] == ["sign", "crowd"]
    out = tmp_path / "out.jsonl"
    assert write_posts([post], out) == 1
    assert load_posts(out)[0] == post


def test_malformed_line_names_its_number(tmp_path) -> None:
    path = _write(tmp_path / "bad.jsonl", ['{"id": "a"}', "", '{"id": "b", oops}', '{"id": "c"}'])
    with pytest.raises(PostValidationError, match=r"bad.jsonl:3: malformed JSON"):
        load_posts(path)
    report = LoadReport()
    posts = load_posts(path, on_error="skip", report=report)
    assert [p.id for p in posts] == ["a", "c"]
    assert report.skipped == 1 and report.errors[0].line == 3 and report.read == 3


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"text": "no id"}, "id", "id must be a non-empty string"),
        ({"id": "x", "text": 5}, "text", "text must be a string"),
        ({"id": "x", "replies": "lol"}, "replies", "replies must be a list"),
        ({"id": "x", "replies": ["ok", 3]}, "replies[1]", "a reply is a string"),
        ({"id": "x", "labels": {"intent": 3}}, "labels.intent", "a label is a string"),
        ({"id": "x", "labels": {"meaning": {"literal": -1}}}, "labels.meaning.literal", "non-negative"),
        ({"id": "x", "labels": {"intent": ["joke", ""]}}, "labels.intent[1]", "non-empty strings"),
        ({"id": "x", "image": 7}, "image", "image must be a path"),
        ({"id": "x", "meta": []}, "meta", "meta must be an object"),
        ({"id": "x", "txt": "typo"}, None, "unknown fields"),
    ],
)
def test_validation_names_field(tmp_path, record, field, message) -> None:
    path = _write(tmp_path / "m.jsonl", ['{"id": "ok"}', json.dumps(record)])
    with pytest.raises(PostValidationError) as info:
        load_posts(path)
    err = info.value
    assert err.line == 2 and err.field == field and message in str(err)
    assert str(err).startswith(f"{path}:2")


def test_duplicate_ids_refused(tmp_path) -> None:
    path = _write(tmp_path / "d.jsonl", ['{"id": "a"}', '{"id": "a"}'])
    with pytest.raises(PostValidationError, match="duplicate id 'a'"):
        load_posts(path)


def test_streaming_and_parquet_and_shards(tmp_path) -> None:
    posts = [Post(f"p{i}", None, f"text {i}", [Reply("r", "u1")], {"intent": ["joke"]}) for i in range(5)]
    write_posts(posts[:3], tmp_path / "shards" / "a.jsonl")
    write_posts(posts[3:], tmp_path / "shards" / "b.jsonl")
    assert [p.id for p in load_posts(tmp_path / "shards")] == [p.id for p in posts]
    stream = load_posts(tmp_path / "shards", streaming=True)
    assert not isinstance(stream, list)
    assert [p.id for p in stream] == [p.id for p in posts]

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in p.to_dict().items()}
        for p in posts
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "posts.parquet")
    loaded = load_posts(tmp_path / "posts.parquet")
    assert loaded == posts


def test_explicit_null_label_means_unlabeled() -> None:
    post = post_from_dict({"id": 5, "labels": {"intent": None, "meaning": "literal"}, "replies": None})
    assert post.id == "5" and post.labels == {"meaning": "literal"} and post.replies == []


def test_unknown_format(tmp_path) -> None:
    (tmp_path / "x.csv").write_text("id\n1\n")
    with pytest.raises(ValueError, match="unknown manifest format"):
        load_posts(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_posts(tmp_path / "missing.jsonl")


def test_parquet_text_that_looks_like_json_stays_text(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "text": "[1, 2]", "replies": json.dumps(["{not json"]), "labels": "{}", "meta": "{}"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    (post,) = load_posts(tmp_path / "p.parquet")
    assert post.text == "[1, 2]" and post.replies == [Reply("{not json")]


def test_image_paths_survive_a_relative_manifest_path_and_a_rewrite(tmp_path, monkeypatch) -> None:
    """A manifest opened by a relative path, then written into another folder (as governance does), must
    still point at the same image files, from any working folder; a relative path in memory is written as
    is."""
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a.png").write_bytes(b"x")
    (tmp_path / "elsewhere.png").write_bytes(b"y")
    _write(
        tmp_path / "data" / "train.jsonl",
        [
            json.dumps({"id": "a", "image": "images/a.png", "text": "t"}),
            json.dumps({"id": "b", "image": str(tmp_path / "elsewhere.png"), "text": "t"}),
        ],
    )
    monkeypatch.chdir(tmp_path)
    posts = load_posts("data/train.jsonl")
    assert [p.image for p in posts] == [str(tmp_path / "data/images/a.png"), str(tmp_path / "elsewhere.png")]
    write_posts(posts, "data/governed/train.jsonl")
    written = [
        json.loads(line)["image"]
        for line in (tmp_path / "data/governed/train.jsonl").read_text().splitlines()
    ]
    assert written == [
        "../images/a.png",
        "../../elsewhere.png",
    ]  # relative to the new file: the tree can move
    write_posts(posts, "data/copy.jsonl", image_paths="absolute")
    written = [json.loads(line)["image"] for line in (tmp_path / "data/copy.jsonl").read_text().splitlines()]
    assert written == [str(tmp_path / "data/images/a.png"), str(tmp_path / "elsewhere.png")]
    monkeypatch.chdir(tmp_path / "data")
    for manifest in ("governed/train.jsonl", "copy.jsonl"):
        reread = load_posts(manifest)
        assert [p.image for p in reread] == [p.image for p in posts]
        assert all(os.path.isfile(p.image) for p in reread)
    write_posts([Post(id="c", image="images/a.png")], tmp_path / "data" / "new.jsonl")
    assert load_posts(tmp_path / "data" / "new.jsonl")[0].image == str(tmp_path / "data/images/a.png")


# ---------------------------------------------------------------------------------------------------------
# Standard JSON, atomic single-file outputs


def _strict_json(line: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def test_write_posts_writes_standard_json_and_counts_non_finite_values(tmp_path):
    from ximgctx.data.io import WriteReport

    posts = [
        Post("a", text="x", meta={"score": float("nan"), "nested": {"v": [1.0, float("inf")]}, "ok": 2.5}),
        Post("b", text="y", meta={"score": 0.5}),
        Post("c", text="z", meta={"low": float("-inf")}),
    ]
    report = WriteReport()
    assert write_posts(posts, tmp_path / "out.jsonl", report=report) == 3
    rows = [_strict_json(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0]["meta"] == {"score": None, "nested": {"v": [1.0, None]}, "ok": 2.5}
    assert rows[1]["meta"] == {"score": 0.5} and rows[2]["meta"] == {"low": None}
    assert report.written == 3 and report.counts() == {"meta: non_finite": 2}
    assert [str(p) for p in report.problems["a"]] == [
        "meta: non_finite: meta.score was nan; written as null",
        "meta: non_finite: meta.nested.v[1] was inf; written as null",
    ]
    assert load_posts(tmp_path / "out.jsonl")[0].meta["score"] is None  # reads back


def test_write_manifest_parquet_is_standard_json_too(tmp_path):
    import pyarrow.parquet as pq

    from ximgctx.adapters import write_manifest
    from ximgctx.data.io import WriteReport

    report = WriteReport()
    write_manifest([Post("a", text="x", meta={"s": float("nan")})], tmp_path / "o.parquet", report=report)
    table = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert _strict_json(table[0]["meta"]) == {"s": None} and report.counts() == {"meta: non_finite": 1}
    assert sorted(os.listdir(tmp_path)) == ["o.parquet"]  # no temporary file left


def test_write_posts_refuses_its_input_and_leaves_it(tmp_path):
    from ximgctx.errors import OutputError

    src = tmp_path / "posts.jsonl"
    write_posts([Post("a", text="x")], src)
    before = src.read_bytes()
    with pytest.raises(OutputError, match="also an input"):
        write_posts(load_posts(src), src, inputs=[src])
    assert src.read_bytes() == before


def test_write_posts_uses_a_unique_temporary_and_keeps_the_old_file_on_error(tmp_path):
    out = tmp_path / "out.jsonl"
    write_posts([Post("old", text="x")], out)
    (tmp_path / "out.jsonl.tmp").write_text("someone else's temporary file\n")  # the old fixed name

    def failing():
        yield Post("new", text="y")
        raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError, match="the input broke"):
        write_posts(failing(), out)
    assert [p.id for p in load_posts(out)] == ["old"]
    assert (tmp_path / "out.jsonl.tmp").read_text() == "someone else's temporary file\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "out.jsonl.tmp"]


def test_write_posts_unwritable_output_is_one_output_error_naming_it(tmp_path):
    from ximgctx.errors import OutputError

    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out.jsonl"  # a parent that is a file: cannot be created
    with pytest.raises(OutputError, match="out.jsonl: cannot write the output"):
        write_posts([Post("a", text="x")], out)


def test_write_posts_full_disk_is_an_output_error_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    from ximgctx.errors import OutputError

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()

    def opener(path, *args, **kwargs):
        return FullDisk(real_open(path, *args, **kwargs))

    monkeypatch.setattr("builtins.open", opener)
    with pytest.raises(OutputError, match="out.jsonl: cannot write the output: no space left"):
        write_posts([Post("a", text="x")], tmp_path / "out.jsonl")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_lone_surrogates_are_written_as_escapes(tmp_path):
    write_posts([Post("a", text="bad \ud800 text")], tmp_path / "o.jsonl")
    raw = (tmp_path / "o.jsonl").read_bytes()
    raw.decode("utf-8")  # valid UTF-8
    assert load_posts(tmp_path / "o.jsonl")[0].text == "bad \ud800 text"


def test_write_posts_output_has_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    os.umask(old)
    write_posts([Post("a", text="x")], tmp_path / "o.jsonl")
    assert (tmp_path / "o.jsonl").stat().st_mode & 0o777 == 0o666 & ~old  # not mkstemp's 0600


def test_jsonl_lines_split_at_newline_only_compressed_or_not_and_bad_bytes_name_their_line(
    tmp_path,
) -> None:
    """JSONL is read line by line by ximgctx: a JSON string holding U+2028 or a lone CR stays one record (a
    splitter on every Unicode line break would cut it), gzip works, and a line that is not UTF-8 is a problem
    naming its line while the others are read."""
    import gzip

    records = [
        {"id": "a", "text": "one\u2028two"},
        {"id": "b", "text": "cr\rinside"},
        {"id": "c", "text": "ok"},
    ]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode() + b"\n\n"
    plain, packed = tmp_path / "p.jsonl", tmp_path / "p.jsonl.gz"
    plain.write_bytes(body)
    packed.write_bytes(gzip.compress(body))
    for path in (plain, packed):
        posts = load_posts(path)
        assert [(p.id, p.text) for p in posts] == [(r["id"], r["text"]) for r in records]
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(body.replace(b'"ok"', b'"\xff"'))
    report = LoadReport()
    posts = load_posts(broken, on_error="skip", report=report)
    assert [p.id for p in posts] == ["a", "b"]
    (error,) = report.errors
    assert error.line == 3 and "UTF-8" in str(error)
