"""Shards with embedded images: the writer, the index, the reader (ximgctx and img2dataset layouts),
bounds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ximgctx.data.images import ImageLimits
from ximgctx.data.record import Post, Reply
from ximgctx.data.shard_formats import MAX_FIELD_BYTES
from ximgctx.data.shard_write import write_shards
from ximgctx.data.shards import (
    ShardInfo,
    ShardMapping,
    ShardProblem,
    list_shards,
    read_shard,
    read_shards,
)
from ximgctx.errors import ArtifactError, InputError

FORMATS = ("parquet", "webdataset")


def _image_bytes(i: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + i % 7, 6 + i % 5), (i * 37 % 256, i * 11 % 256, 90)).save(buf, format=fmt)
    return buf.getvalue()


def _posts(folder: Path, n: int = 23) -> list[Post]:
    """Varied posts: PNG, JPEG, WebP, GIF image files, some without an image, unicode, replies, labels,
    meta."""
    fmts = ["PNG", "JPEG", "WEBP", "GIF"]
    out = []
    for i in range(n):
        image = None
        if i % 6:
            fmt = fmts[i % 4]
            path = folder / f"img{i}.{fmt.lower()}"
            path.write_bytes(_image_bytes(i, fmt))
            image = str(path)
        out.append(
            Post(
                id=f"post.{i}/x",  # dots and slashes: ids never become tar member names
                image=image,
                text=f"caption {i} — ünïcode" if i % 3 else "",
                replies=[Reply("lol", f"u{i}"), Reply("same")] if i % 2 else [],
                labels={"intent": ["joke"], "meaning": {"ironic": 0.7, "literal": 0.3}} if i % 4 else {},
                meta={"visibility": "public", "author": f"a{i}", "nested": {"k": [1, 2.5, None]}},
            )
        )
    return out


def _same(a: Post, b: Post) -> None:
    assert (a.id, a.text, a.replies, a.labels, a.meta) == (b.id, b.text, b.replies, b.labels, b.meta)
    if a.image is None:
        assert b.image is None
    else:
        assert isinstance(b.image, bytes) and Path(a.image).read_bytes() == b.image


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_post_equal_fields_byte_identical_images(tmp_path: Path, fmt: str) -> None:
    posts = _posts(tmp_path)
    report = write_shards(posts, tmp_path / "shards", format=fmt, posts_per_shard=10)
    assert report.posts == 23 and [e["count"] for e in report.shards] == [10, 10, 3]
    assert report.images_kept == sum(p.image is not None for p in posts) and not report.problems
    shards = list_shards(tmp_path / "shards")
    suffix = ".parquet" if fmt == "parquet" else ".tar"
    assert [s.name for s in shards] == [f"shard-0000{i}{suffix}" for i in range(3)]
    assert all(s.format == fmt and s.sha256 and len(s.sha256) == 64 for s in shards)
    got = list(read_shards(tmp_path / "shards"))
    assert [(s.name, pos) for s, pos, _ in got] == [(shards[i // 10].name, i % 10) for i in range(23)]
    assert len(got) == len(posts)
    for p, (_, _, q) in zip(posts, got, strict=True):
        assert isinstance(q, Post)
        _same(p, q)
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert index["total"] == 23 and index["shard_format"] == fmt
    assert [e["count"] for e in index["shards"]] == [10, 10, 3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_start_gives_the_same_tail_as_a_full_read(tmp_path: Path, fmt: str) -> None:
    write_shards(_posts(tmp_path, 300), tmp_path / "s", format=fmt, posts_per_shard=300)
    (shard,) = list_shards(tmp_path / "s")
    full = list(read_shard(shard))
    assert [pos for pos, _ in full] == list(range(300))
    for k in (0, 1, 255, 256, 257, 299, 300, 400):  # row-group edges (256 rows) and past the end
        assert list(read_shard(shard, start=k)) == full[k:]


def test_parquet_start_skips_earlier_row_groups_unread(tmp_path: Path, monkeypatch) -> None:
    write_shards(_posts(tmp_path, 600), tmp_path / "s", posts_per_shard=600)
    (shard,) = list_shards(tmp_path / "s")
    asked: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, row_groups=None, **kw):
        asked.append(list(row_groups))
        return real(self, *a, row_groups=row_groups, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    first = next(read_shard(shard, start=520))
    assert first[0] == 520 and first[1].id == "post.520/x"
    assert asked == [[2]]  # row groups of 256 rows: 520 lies in the third; the first two are never read


def test_corrupt_member_is_a_problem_for_that_post_only(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 5), tmp_path / "s", format="webdataset", posts_per_shard=5)
    # rewrite the tar with record 2's JSON member corrupted, then read without the index (discovered)
    src = tmp_path / "s" / "shard-00000.tar"
    bad = tmp_path / "bad"
    bad.mkdir()
    with tarfile.open(src) as tin, tarfile.open(bad / "00000.tar", "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name == "00000000002.json":
                data = b'{"id": "broken'
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    got = list(read_shard(list_shards(bad)[0]))
    assert [pos for pos, _ in got] == [0, 1, 2, 3, 4]
    problem = got[2][1]
    assert isinstance(problem, ShardProblem) and problem.kind == "corrupt_member"
    assert problem.shard == "00000.tar" and problem.position == 2 and "00000.tar record 2" in str(problem)
    assert [x.id for _, x in got if isinstance(x, Post)] == ["post.0/x", "post.1/x", "post.3/x", "post.4/x"]


def test_invalid_record_is_a_problem_naming_shard_position_and_field(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "labels": ['{"intent": 3}', None, "{"]})
    pq.write_table(table, tmp_path / "part.parquet")
    got = list(read_shard(list_shards(tmp_path)[0]))
    assert isinstance(got[0][1], ShardProblem) and got[0][1].field == "labels.intent"
    assert got[0][1].position == 0 and got[0][1].shard == "part.parquet"
    assert isinstance(got[1][1], Post) and got[1][1].id == "b"
    assert isinstance(got[2][1], ShardProblem) and got[2][1].kind == "invalid_json"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_tar_is_reported_by_name_after_what_could_be_read(tmp_path: Path, cut: float) -> None:
    write_shards(_posts(tmp_path, 30), tmp_path / "s", format="webdataset", posts_per_shard=10)
    folder = tmp_path / "plain"  # no index: the cut shard is read, not refused by its checksum
    folder.mkdir()
    for s in list_shards(tmp_path / "s"):
        data = s.path.read_bytes()
        end = len(data.rstrip(b"\0"))  # the members' end, before tar's zero padding
        (folder / s.name).write_bytes(data[: int(end * cut)] if s.name.endswith("1.tar") else data)
    got = list(read_shards(folder))
    problems = [x for _, _, x in got if isinstance(x, ShardProblem)]
    assert len(problems) == 1 and problems[0].kind == "truncated" and problems[0].shard == "shard-00001.tar"
    ids = [x.id for _, _, x in got if isinstance(x, Post)]
    assert ids[:10] == [f"post.{i}/x" for i in range(10)] and ids[-10:] == [
        f"post.{i}/x" for i in range(20, 30)
    ]
    assert 10 < len(ids) < 30  # some of the cut shard was read


def test_tar_cut_at_a_member_boundary_is_truncated(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 4), tmp_path / "s", format="webdataset", posts_per_shard=4)
    data = (tmp_path / "s" / "shard-00000.tar").read_bytes().rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)  # end of the last member's padding, but no end-of-archive blocks
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "a.tar").write_bytes(data)
    got = list(read_shard(list_shards(tmp_path / "cut")[0]))
    assert isinstance(got[-1][1], ShardProblem) and got[-1][1].kind == "truncated"


def test_truncated_parquet_is_reported_by_name_and_the_other_shards_read(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 20), tmp_path / "s", posts_per_shard=10)
    folder = tmp_path / "plain"
    folder.mkdir()
    for s in list_shards(tmp_path / "s"):
        data = s.path.read_bytes()
        (folder / s.name).write_bytes(data[: len(data) // 2] if s.name.endswith("0.parquet") else data)
    got = list(read_shards(folder))
    assert isinstance(got[0][2], ShardProblem) and got[0][2].shard == "shard-00000.parquet"
    assert got[0][2].kind == "truncated"
    assert [x.id for _, _, x in got[1:]] == [f"post.{i}/x" for i in range(10, 20)]


def test_altered_shard_fails_its_checksum_and_yields_nothing_from_it(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 20), tmp_path / "s", posts_per_shard=10)
    shards = list_shards(tmp_path / "s")
    with open(shards[0].path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    got = list(read_shard(shards[0]))
    assert (
        len(got) == 1 and got[0][1].kind == "checksum_mismatch" and got[0][1].shard == "shard-00000.parquet"
    )
    assert len(list(read_shard(shards[1]))) == 10


def test_altered_index_is_refused_against_the_manifest(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 4), tmp_path / "s", posts_per_shard=2)
    index = tmp_path / "s" / "shards.json"
    raw = json.loads(index.read_text())
    raw["shards"][0]["count"] = 3
    index.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="shards.json: does not match"):
        list_shards(tmp_path / "s")


@pytest.mark.parametrize("name", ["../outside.parquet", "/etc/passwd", "sub/../../x.parquet"])
def test_index_naming_a_file_outside_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "s").mkdir()
    entry = {"name": name, "count": 1, "sha256": "0" * 64, "format": "parquet"}
    (tmp_path / "s" / "shards.json").write_text(
        json.dumps({"format": "ximgctx-shards", "version": 1, "shards": [entry]})
    )
    with pytest.raises(ArtifactError, match="leaves the shard folder|not a relative"):
        list_shards(tmp_path / "s")


def test_symlinked_shard_is_refused(tmp_path: Path) -> None:
    write_shards(_posts(tmp_path, 2), tmp_path / "s", posts_per_shard=2)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.parquet").symlink_to(tmp_path / "s" / "shard-00000.parquet")
    with pytest.raises(ArtifactError, match="not a regular file"):
        list_shards(tmp_path / "d")


def test_empty_folder_is_a_clear_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path}.*holds no shards"):
        list_shards(tmp_path)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_hostile_members_are_refused_per_record(tmp_path: Path) -> None:
    sym = tarfile.TarInfo("00002.jpg")
    sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("00003.json")
    hard.type, hard.linkname = tarfile.LNKTYPE, "00000.json"
    members = [
        _member("00000.json", b'{"id": "ok0"}'),
        _member("../../evil.json", b'{"id": "evil"}'),
        _member("/abs/p.json", b'{"id": "abs"}'),
        (sym, None),
        (hard, None),
        _member("00004.json", b'{"id": "ok4"}'),
    ]
    _tar(tmp_path / "00000.tar", members)
    got = list(read_shard(list_shards(tmp_path)[0]))
    kinds = [x.kind if isinstance(x, ShardProblem) else x.id for _, x in got]
    assert kinds == ["ok0", "unsafe_member_name", "unsafe_member_name", "not_a_file", "not_a_file", "ok4"]
    assert not (tmp_path.parent / "evil.json").exists() and not list(tmp_path.glob("abs"))


def test_member_declaring_a_huge_size_is_refused_unread(tmp_path: Path) -> None:
    """A header declaring more bytes than a field may have is refused from the header: nothing is read."""
    path = tmp_path / "00000.tar"
    _tar(path, [_member("00000.json", b'{"id": "a"}'), _member("00001.json", b"x" * 10)])
    data = bytearray(path.read_bytes())
    # patch the second header's size field to 4 GiB (octal, 11 digits) and fix its checksum
    h = 1024
    assert data[h : h + 10] == b"00001.json"
    data[h + 124 : h + 136] = b"%011o\0" % (4 << 30)
    data[h + 148 : h + 156] = b" " * 8
    data[h + 148 : h + 156] = b"%06o\0 " % sum(data[h : h + 512])
    path.write_bytes(bytes(data))
    got = list(read_shard(ShardInfo("00000.tar", path, 2, None, "webdataset")))
    assert got[0][1].id == "a"
    assert isinstance(got[1][1], ShardProblem) and got[1][1].kind == "member_too_large"
    assert f"over the {MAX_FIELD_BYTES}" in got[1][1].detail
    assert got[2][1].kind == "truncated" and len(got) == 3  # and the file does not hold what it declares


def test_img2dataset_webdataset_layout_reads_with_the_default_mapping(tmp_path: Path) -> None:
    jpg = _image_bytes(3, "JPEG")
    meta = {
        "url": "https://example.com/a.jpg",
        "caption": "a cat",
        "key": "000000012",
        "status": "success",
        "width": 11,
        "height": 9,
        "error_message": None,
    }
    _tar(
        tmp_path / "00000.tar",
        [
            _member("000000012.jpg", jpg),
            _member("000000012.json", json.dumps(meta).encode()),
            _member("000000012.txt", b"a cat on a mat"),
            _member("000000013.txt", b"no image here"),
        ],
    )
    # img2dataset writes a metadata-only parquet and a stats file beside each tar: the tars are the shards
    pq.write_table(
        pa.table({"key": ["000000012"], "url": ["https://example.com/a.jpg"]}), tmp_path / "00000.parquet"
    )
    (tmp_path / "00000_stats.json").write_text("{}")
    shards = list_shards(tmp_path)
    assert [(s.name, s.count, s.format, s.sha256) for s in shards] == [("00000.tar", 2, "webdataset", None)]
    (_, a), (_, b) = read_shard(shards[0])
    assert (a.id, a.text, a.image) == ("000000012", "a cat on a mat", jpg)  # key -> id, txt -> text
    assert a.meta["source"] == {
        "url": "https://example.com/a.jpg",
        "status": "success",
        "width": 11,
        "height": 9,
    }
    assert (b.id, b.text, b.image) == ("000000013", "no image here", None)  # the tar key when no json


def test_img2dataset_parquet_and_hf_image_struct_read_with_the_default_mapping(tmp_path: Path) -> None:
    jpg, png = _image_bytes(1, "JPEG"), _image_bytes(2, "PNG")
    pq.write_table(
        pa.table(
            {
                "key": ["000000000", "000000001"],
                "caption": ["a dog", "a hat"],
                "jpg": [jpg, None],
                "url": ["u0", "u1"],
                "status": ["success", "failed_to_download"],
            }
        ),
        tmp_path / "00000.parquet",
    )
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    hf = pa.table(
        {"id": ["h0"], "text": ["hi"], "image": pa.array([{"bytes": png, "path": "/etc/passwd"}], image_type)}
    )
    pq.write_table(hf, tmp_path / "00001.parquet")
    got = [x for _, _, x in read_shards(tmp_path)]
    assert [(p.id, p.text, p.image) for p in got] == [
        ("000000000", "a dog", jpg),
        ("000000001", "a hat", None),
        ("h0", "hi", png),
    ]
    assert got[1].meta["source"] == {"url": "u1", "status": "failed_to_download"}


def test_mapping_names_other_columns(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"uid": ["x"], "body": ["words"], "pic": [_image_bytes(0, "PNG")]}), tmp_path / "a.parquet"
    )
    mapping = ShardMapping.parse("id=uid,text=body,image=pic")
    ((_, post),) = read_shard(list_shards(tmp_path)[0], mapping=mapping)
    assert (post.id, post.text, post.meta) == ("x", "words", {})
    with pytest.raises(ValueError, match="ATTR=FIELD"):
        ShardMapping.parse("colour=red")


def test_reencodes_a_non_allowlisted_name_and_keeps_unknown_bytes_counted(tmp_path: Path) -> None:
    mpo = tmp_path / "m.jpg"
    Image.new("RGB", (9, 9), (1, 2, 3)).save(
        mpo, format="MPO", save_all=True, append_images=[Image.new("RGB", (9, 9))]
    )
    junk = tmp_path / "j.png"
    junk.write_bytes(b"II*\0not an allowed image")  # a TIFF signature: not on the allowlist
    posts = [Post("m", str(mpo)), Post("j", str(junk)), Post("gone", str(tmp_path / "missing.png"))]
    report = write_shards(posts, tmp_path / "s", posts_per_shard=5)
    assert (report.images_kept, report.images_reencoded) == (0, 1)
    assert dict(report.problems) == {"image: format_not_allowed": 1, "image: missing": 1}
    m, j, gone = (x for _, _, x in read_shards(tmp_path / "s"))
    assert Image.open(io.BytesIO(m.image)).format == "PNG"
    assert j.image == junk.read_bytes() and gone.image is None


def test_in_memory_pil_image_is_stored_as_png_and_limits_apply(tmp_path: Path) -> None:
    # a Post may hold a PIL image (Post.image's type says so); it used to reach os.open and raise TypeError
    pixels = Image.new("RGB", (6, 4), (10, 20, 30))
    huge = Image.new("RGB", (100, 100))
    posts = [Post("p", pixels), Post("h", huge)]
    report = write_shards(posts, tmp_path / "s", posts_per_shard=5, limits=ImageLimits(max_pixels=1000))
    assert report.images_reencoded == 1
    assert dict(report.problems) == {"image: too_many_pixels": 1}
    p, h = (x for _, _, x in read_shards(tmp_path / "s"))
    stored = Image.open(io.BytesIO(p.image))
    assert stored.format == "PNG" and stored.size == (6, 4) and stored.getpixel((0, 0)) == (10, 20, 30)
    assert h.image is None


def test_webdataset_reads_our_tars_and_we_read_its_tarwriter_output(tmp_path: Path) -> None:
    """Against the other side: the ``webdataset`` package (what img2dataset writes with) both ways."""
    wds = pytest.importorskip("webdataset")
    posts = _posts(tmp_path, 6)
    write_shards(posts, tmp_path / "ours", format="webdataset", posts_per_shard=6)
    samples = list(wds.WebDataset(str(tmp_path / "ours" / "shard-00000.tar"), shardshuffle=False))
    assert [json.loads(s["json"])["id"] for s in samples] == [p.id for p in posts]
    for s, p in zip(samples, posts, strict=True):
        stored = [s[k] for k in ("png", "jpg", "webp", "gif") if k in s]
        assert stored == ([Path(p.image).read_bytes()] if p.image else [])

    jpg = _image_bytes(5, "JPEG")
    (tmp_path / "theirs").mkdir()
    with wds.TarWriter(str(tmp_path / "theirs" / "00000.tar")) as sink:  # img2dataset's writer
        for i in range(3):
            sink.write(
                {
                    "__key__": f"00000000{i}",
                    "jpg": jpg,
                    "txt": f"caption {i}",
                    "json": {"key": f"00000000{i}", "url": f"u{i}"},
                }
            )
    got = [x for _, _, x in read_shards(tmp_path / "theirs")]
    assert [(p.id, p.text, p.image, p.meta["source"]["url"]) for p in got] == [
        (f"00000000{i}", f"caption {i}", jpg, f"u{i}") for i in range(3)
    ]


def test_hugging_face_datasets_reads_our_parquet_as_an_image_column_and_we_read_its_parquet(
    tmp_path: Path,
) -> None:
    """Against the other side: ``datasets`` sees ximgctx's image column as ``Image()``; its Image parquet
    reads."""
    import datasets

    posts = _posts(tmp_path, 4)
    write_shards(posts, tmp_path / "ours", posts_per_shard=4)
    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "ours" / "shard-00000.parquet"), split="train"
    )
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds[1]["image"].size == Image.open(posts[1].image).size and ds[0]["image"] is None
    png = _image_bytes(2, "PNG")
    hf = datasets.Dataset.from_dict(
        {"id": ["a", "b"], "text": ["x", "y"], "image": [{"bytes": png, "path": None}, None]},
        features=datasets.Features(
            {"id": datasets.Value("string"), "text": datasets.Value("string"), "image": datasets.Image()}
        ),
    )
    (tmp_path / "theirs").mkdir()
    hf.to_parquet(str(tmp_path / "theirs" / "train-00000.parquet"))
    got = [x for _, _, x in read_shards(tmp_path / "theirs")]
    assert [(p.id, p.text, p.image) for p in got] == [("a", "x", png), ("b", "y", None)]


def test_json_nested_past_the_recursion_limit_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    _tar(
        tmp_path / "0.tar",
        [_member("a.json", b'{"id": "ok"}'), _member("b.json", b'{"meta": ' + deep + b"}")],
    )
    pq.write_table(pa.table({"id": ["x"], "meta": [deep.decode()]}), tmp_path / "1.parquet")
    got = [x for _, _, x in read_shards(tmp_path)]
    assert got[0].id == "ok" and got[1].kind == "corrupt_member" and len(got) == 2  # the tars are the shards
    (tmp_path / "0.tar").unlink()
    (only,) = [x for _, _, x in read_shards(tmp_path)]
    assert isinstance(only, ShardProblem) and only.kind == "invalid_json" and only.field == "meta"


def test_row_group_declaring_too_many_bytes_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    from ximgctx.data import shard_formats

    write_shards(_posts(tmp_path, 3), tmp_path / "s", posts_per_shard=3)
    monkeypatch.setattr(shard_formats, "MAX_ROW_GROUP_BYTES", 100)
    got = list(read_shard(list_shards(tmp_path / "s")[0]))
    assert len(got) == 1 and got[0][1].kind == "row_group_too_large" and "row group 0" in got[0][1].detail


def test_lone_surrogates_round_trip_in_webdataset_and_are_a_clear_error_in_parquet(tmp_path: Path) -> None:
    post = Post("s", text="bad \ud800 text", replies=[Reply("r \udfff")], meta={"k": "\ud83d"})
    write_shards([post], tmp_path / "w", format="webdataset", posts_per_shard=1)
    (got,) = [x for _, _, x in read_shards(tmp_path / "w")]
    assert (got.text, got.replies, got.meta) == (post.text, post.replies, post.meta)
    with pytest.raises(InputError, match="post 's': its text holds a lone surrogate"):
        write_shards([post], tmp_path / "p", posts_per_shard=1)
    assert not (tmp_path / "p").exists()
    meta_only = Post("m", text="fine", meta={"k": "\ud83d"})
    write_shards([meta_only], tmp_path / "p2", posts_per_shard=1)  # JSON columns keep it as an escape
    assert [x.meta for _, _, x in read_shards(tmp_path / "p2")] == [{"k": "\ud83d"}]
