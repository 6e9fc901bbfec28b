"""``govern`` over a shard folder in several processes gives what one process gives: the same shard files
byte for byte (posts, order, index), the same audit and author digests, the same errors and skips."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ximgctx._artifacts import verify_artifact
from ximgctx.cli import govern as govern_cli
from ximgctx.data.io import load_posts
from ximgctx.data.record import Post, PostValidationError, Reply
from ximgctx.data.shard_write import write_shards
from ximgctx.data.shards import list_shards
from ximgctx.governance import GovernancePolicy, check_governed, govern, govern_shards

KEY = b"s" * 32
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def _posts() -> list[Post]:
    """44 posts over 6 shards: personal data, private posts, images, and an author who opts out on a post in
    the last shard while their posts sit in the first (a cross-shard opt-out only the first pass can see)."""
    posts = []
    for i in range(44):
        meta = {"visibility": "private" if i % 9 == 4 else "public", "author": f"user{i % 11}", "n": i}
        text = f"post {i}: mail me at person{i}@example.com or call 415-555-01{i:02d}" if i % 3 else f"hi {i}"
        replies = [Reply(f"reply {i} from user{(i + 3) % 11}", f"user{(i + 3) % 11}")] if i % 2 else []
        image = PNG if i % 4 == 0 else None
        posts.append(Post(id=f"p{i}", text=text, replies=replies, meta=meta, image=image))
    posts[42].meta["opt_out"] = True  # user9 (42 % 11): their posts in shards 1-3 and their replies go too
    posts[7].meta["alt_text"] = "photo by Jane, +44 20 7946 0958"
    return posts


def _files(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_processes_give_the_one_process_output_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_shards(_posts(), tmp_path / "in", posts_per_shard=8)
    assert len(list_shards(tmp_path / "in")) == 6
    key_file = tmp_path / "governance.key"
    key_file.write_bytes(KEY)
    reports = {}
    for n in (1, 2):
        args = ["--data", str(tmp_path / "in"), "--out", str(tmp_path / f"out{n}"), "--key-file"]
        args += [str(key_file), "--report", str(tmp_path / f"audit{n}.json")]
        args += ["--authors", str(tmp_path / f"authors{n}.json")]
        assert govern_cli.main([*args, "--processes", str(n)]) == 0
        reports[n] = json.loads((tmp_path / f"audit{n}.json").read_text())
        reports[n].pop("out")
    capsys.readouterr()
    assert _files(tmp_path / "out1") == _files(tmp_path / "out2")  # shards, index and manifest
    assert reports[1] == reports[2]
    assert (tmp_path / "authors1.json").read_bytes() == (tmp_path / "authors2.json").read_bytes()
    verify_artifact(tmp_path / "out2", "shards")
    got = list(load_posts(tmp_path / "out2"))
    check_governed(got)
    # the same as governing the posts in memory with the library's one-call API
    want = govern(list(load_posts(tmp_path / "in")), key=KEY)
    assert [p.to_dict() for p in got] == [p.to_dict() for p in want.posts]
    assert reports[2]["posts"]["kept"] == len(got) == want.audit.kept_posts
    # user9: posts 9, 20, 31 in shards 1-3, flagged by post 42 in shard 5 (another process's shard)
    assert reports[2]["posts"]["dropped"]["opted_out_author"] == 4
    assert reports[2]["redactions"]["email"] > 20 and all("example.com" not in p.text for p in got)
    assert sum(p.image == PNG for p in got) == sum(p.image is not None for p in want.posts) > 0

    assert govern_cli.main(["--data", str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--report",
                            str(tmp_path / "r.json"), "--processes", "0"]) == 2  # fmt: skip
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text("")
    assert govern_cli.main(["--data", str(jsonl), "--out", str(tmp_path / "x.jsonl"), "--report",
                            str(tmp_path / "r.json"), "--processes", "2"]) == 2  # fmt: skip
    assert "splits shard folders" in capsys.readouterr().err


def test_processes_meet_the_same_bad_shard_and_skip_it_the_same_way(tmp_path: Path) -> None:
    write_shards(_posts(), tmp_path / "in", posts_per_shard=8)
    third = list_shards(tmp_path / "in")[2].path
    os.chmod(third, 0o644)
    with open(third, "ab") as f:  # altered after its index was written: a checksum mismatch
        f.write(b"\0")
    policy = GovernancePolicy()
    errors = []
    for n in (1, 2):
        with pytest.raises(PostValidationError) as e:
            govern_shards(tmp_path / "in", tmp_path / f"raise{n}", policy, key=KEY, processes=n)
        errors.append(str(e.value))
        assert not (tmp_path / f"raise{n}").exists()
    assert errors[0] == errors[1] and "checksum_mismatch" in errors[0] and third.name in errors[0]
    audits, digests = [], []
    for n in (1, 2):
        found: set[str] = set()
        out = tmp_path / f"skip{n}" / "governed"  # in a folder not made yet
        audit = govern_shards(tmp_path / "in", out, policy, key=KEY, processes=n, on_error="skip",
                              author_digests=found)  # fmt: skip
        assert os.listdir(out.parent) == ["governed"]  # no temporary file left beside it
        audits.append(audit.to_dict())
        digests.append(found)
    assert audits[0] == audits[1] and audits[0]["posts"]["skipped_malformed"] == 1
    assert digests[0] == digests[1] and len(digests[0]) > 5
    assert _files(tmp_path / "skip1" / "governed") == _files(tmp_path / "skip2" / "governed")
    kept = {p.id for p in load_posts(tmp_path / "skip2" / "governed")}
    assert kept.isdisjoint({f"p{i}" for i in range(16, 24)})  # the altered third shard
