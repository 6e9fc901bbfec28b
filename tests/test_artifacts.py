"""The one artifact writer/verifier: manifests, refusals naming the file, safe replacement, locks."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from ximgctx._artifacts import (
    MANIFEST,
    artifact_digest,
    atomic_output,
    check_output_folder,
    folder_lock,
    verify_artifact,
    write_artifact,
)
from ximgctx.errors import ArtifactError, OutputError, XimgctxError


def _write(path, kind="thing", **kw):
    with write_artifact(path, kind, **kw) as tmp:
        (tmp / "a.json").write_text('{"x": 1}')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"\x00" * 10)
    return path


def test_round_trip_lists_every_file_with_size(tmp_path):
    out = _write(tmp_path / "art", meta={"note": "hi"})
    m = verify_artifact(out, "thing")
    assert sorted(m.files) == ["a.json", "sub/w.bin"]
    assert m.files["sub/w.bin"]["bytes"] == 10
    assert m.kind == "thing" and m.version == 1 and m.meta == {"note": "hi"}
    assert m.digest == artifact_digest(out)
    assert verify_artifact(out, "thing", expected_sha256=m.digest.upper()).digest == m.digest
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary folder left


@pytest.mark.parametrize(
    "tamper, needle",
    [
        (lambda p: (p / "extra.py").write_text("import os"), "extra.py: not listed"),
        (lambda p: (p / "sub" / "w.bin").write_bytes(b"\x01" * 10), "w.bin: SHA-256"),
        (lambda p: (p / "sub" / "w.bin").write_bytes(b"\x00" * 11), "w.bin: 11 bytes"),
        (lambda p: (p / "a.json").unlink(), "a.json: listed in manifest.json but missing"),
        (lambda p: os.symlink("/etc/hostname", p / "link"), "link: a symbolic link"),
        (lambda p: (p / MANIFEST).unlink(), "no manifest.json"),
    ],
)
def test_tampered_folders_are_refused_naming_the_file(tmp_path, tamper, needle):
    out = _write(tmp_path / "art")
    tamper(out)
    with pytest.raises(ArtifactError, match=needle.replace(".", r"\.")):
        verify_artifact(out, "thing")


@pytest.mark.parametrize("rel", ["../outside.txt", "/etc/passwd", "sub/../a.json", "a\\b", "C:/x", ""])
def test_listed_paths_must_stay_inside(tmp_path, rel):
    out = _write(tmp_path / "art")
    (tmp_path / "outside.txt").write_text("secret")
    raw = json.loads((out / MANIFEST).read_text())
    raw["files"][rel] = {"sha256": "0" * 64, "bytes": 6}
    (out / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="listed path"):
        verify_artifact(out, "thing")


def test_wrong_kind_version_and_pin_are_refused(tmp_path):
    out = _write(tmp_path / "art")
    with pytest.raises(ArtifactError, match="kind 'thing', not 'model'"):
        verify_artifact(out, "model")
    with pytest.raises(ArtifactError, match="does not match the expected"):
        verify_artifact(out, "thing", expected_sha256="ab" * 32)
    raw = json.loads((out / MANIFEST).read_text())
    raw["version"] = 9
    (out / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="newer than this ximgctx reads"):
        verify_artifact(out, "thing", max_version=1)


def test_replacing_unrelated_data_is_refused_and_leaves_it(tmp_path):
    victim = tmp_path / "work"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="refusing to replace it"):
        _write(victim)
    assert (victim / "notes.txt").read_text() == "keep me"
    other = _write(tmp_path / "other", kind="model")
    with pytest.raises(OutputError, match="kind 'model'"):
        _write(other, kind="thing")
    _write(victim, overwrite=True)  # told to
    assert not (victim / "notes.txt").exists() and verify_artifact(victim, "thing")
    _write(victim)  # same kind: replaced without being told
    assert isinstance(OutputError("x"), XimgctxError)


def test_working_folder_and_inputs_are_never_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for target in (".", str(tmp_path.parent)):
        with pytest.raises(OutputError, match="working folder"):
            check_output_folder(target, "thing", overwrite=True)
    data = tmp_path / "d" / "posts.jsonl"
    data.parent.mkdir()
    data.write_text("{}")
    with pytest.raises(OutputError, match="is also an input"):
        check_output_folder(tmp_path / "d", "thing", overwrite=True, inputs=[data])
    with pytest.raises(OutputError, match="is also an input"), atomic_output(data, inputs=[data]):
        pass
    assert (tmp_path / "keep.txt").exists() and data.read_text() == "{}"


def test_failed_write_keeps_the_old_artifact_and_removes_the_temporary(tmp_path):
    out = _write(tmp_path / "art")
    before = artifact_digest(out)
    with pytest.raises(RuntimeError), write_artifact(out, "thing") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert artifact_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["art"]


def test_atomic_output_replaces_or_leaves_nothing(tmp_path):
    out = tmp_path / "o.jsonl"
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
    with pytest.raises(ValueError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]


def test_read_only_output_is_one_clear_error(tmp_path):
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        # root ignores permission bits; a missing parent that is a file stands for an unwritable place
        (tmp_path / "file").write_text("x")
        with (
            pytest.raises(OutputError, match="cannot write the output"),
            atomic_output(tmp_path / "file" / "o"),
        ):
            pass
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputError, match="permission denied"), atomic_output(ro / "o.jsonl"):
            pass


def _hold(path, ready, done):
    with folder_lock(path):
        ready.set()
        done.wait(10)


def test_second_writer_fails_at_once_naming_the_first(tmp_path):
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path / "out", ready, done))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(OutputError, match=f"pid {p.pid}"), folder_lock(tmp_path / "out"):
            pass
    finally:
        done.set()
        p.join(10)
    with folder_lock(tmp_path / "out"):  # released when the holder ends
        pass


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_a_planted_lock_file_is_refused_and_its_target_kept(tmp_path, plant):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = tmp_path / ".out.lock"
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "hardlink":
        os.link(victim, lock)
    else:
        os.mkfifo(lock)
    with pytest.raises(OutputError, match=r"\.out\.lock"), folder_lock(tmp_path / "out"):
        pass
    assert victim.read_text() == "precious\n"
    assert os.path.lexists(lock)  # refused, not removed: the operator sees what was planted


def test_a_stale_lock_file_from_a_crashed_holder_is_taken(tmp_path):
    (tmp_path / ".out.lock").write_text("12345\n")
    with folder_lock(tmp_path / "out") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()
