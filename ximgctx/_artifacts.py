"""One writer and one verifier for every folder ximgctx saves: models, checkpoints, search indexes, label
memories and pretrained encoder exports.

A saved folder is an *artifact*. Its ``manifest.json`` is the format marker and the list of every other file::

    {"format": "ximgctx-artifact", "kind": "model", "version": 1, "ximgctx_version": "0.1.0",
     "files": {"config.json": {"sha256": "...", "bytes": 1234}, "adapter/adapter_model.safetensors": {...}},
     "meta": {...}}

Rules, checked by :func:`verify_artifact` before anything in the folder is read:

* every file except ``manifest.json`` is listed, with its SHA-256 and size; a missing, unlisted, resized or
  altered file is refused, naming it;
* listed paths are relative POSIX paths inside the folder (no ``..``, no absolute path, no backslash), and no
  file or folder inside is a symlink (unless ``link_root`` allows links that stay inside it: the Hugging Face
  cache stores snapshot files as links to its blobs);
* the kind and version are the ones the caller expects;
* ``expected_sha256`` pins the exact artifact: it is the SHA-256 of ``manifest.json``, which itself hashes
  every file (see :func:`artifact_digest`).

:func:`write_artifact` writes into a uniquely named temporary sibling folder, writes the manifest last, and
renames the folder into place, so a reader sees the old artifact or the new one, never a mix. It replaces an
existing folder only when that folder is empty or holds an artifact of the same kind, or with
``overwrite=True``; it never replaces the working folder, an ancestor of it, or a folder that holds one of the
run's inputs. :func:`folder_lock` is an advisory lock on an output (a second writer fails at once, naming the
first one's pid).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ximgctx._fsutil import replace_folder, sha256_file
from ximgctx.errors import ArtifactError, OutputError

__all__ = [
    "open_text_out",
    "MANIFEST",
    "Manifest",
    "artifact_digest",
    "artifact_kind",
    "atomic_output",
    "check_output_folder",
    "folder_lock",
    "output_errors",
    "verify_artifact",
    "pinned_copy",
    "write_artifact",
]

MANIFEST = "manifest.json"
FORMAT = "ximgctx-artifact"
_MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists files; 16 MiB holds ~100k entries
_UMASK = os.umask(0o022)  # read once at import (umask has no getter); restored on the next line
os.umask(_UMASK)


@dataclass(frozen=True)
class Manifest:
    """A verified artifact: what it is, what it holds, and the digest that pins it."""

    path: Path  # the folder (resolved)
    kind: str  # "model", "checkpoint", "search-index", "label-memory", "pretrained-encoder", ...
    version: int  # the kind's format version
    files: dict[str, dict[str, Any]]  # relative path -> {"sha256", "bytes"}
    digest: str  # SHA-256 of manifest.json: pins every file
    meta: dict[str, Any] = field(default_factory=dict)  # free-form, written by the artifact's owner


def artifact_digest(path: str | os.PathLike[str]) -> str:
    """The digest that pins an artifact: the SHA-256 of its ``manifest.json`` (which hashes every file)."""
    return sha256_file(Path(path) / MANIFEST)


def artifact_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind written in a folder's manifest, or None when it holds no readable ximgctx manifest."""
    try:
        raw = _read_manifest(Path(path))
    except ArtifactError:
        return None
    kind = raw.get("kind")
    return kind if isinstance(kind, str) else None


# --------------------------------------------------------------------------------------------- verify
def _read_manifest(path: Path, link_root: Path | None = None) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such folder")
    try:
        st = os.lstat(mpath)
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: no {MANIFEST}, so its files cannot be verified; it was not written by ximgctx"
        ) from None
    if stat.S_ISLNK(st.st_mode) and link_root is not None and mpath.resolve().is_relative_to(link_root):
        st = os.stat(mpath)  # a Hugging Face cache: the snapshot's manifest links to a blob inside the repo
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"{mpath}: not a regular file")
    if st.st_size > _MAX_MANIFEST_BYTES:
        raise ArtifactError(
            f"{mpath}: {st.st_size} bytes, over the {_MAX_MANIFEST_BYTES} bytes a manifest may have"
        )
    try:
        raw = json.loads(mpath.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: not an ximgctx artifact manifest (format={_short(raw)})")
    return raw


def _short(raw: Any) -> str:
    value = raw.get("format") if isinstance(raw, dict) else raw
    return repr(value)[:80]


def _check_relpath(rel: Any, where: Path) -> str:
    """A listed path must be a plain relative POSIX path that stays inside the folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ArtifactError(f"{where}: listed path {rel!r} is not a relative POSIX path")
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise ArtifactError(f"{where}: listed path {rel!r} leaves the folder or is not normalised")
    return rel


def _walk(root: Path, link_root: Path | None) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` as (relative posix path, path); links refused unless they stay in
    link_root."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = p.resolve()
                if link_root is None or not target.is_relative_to(link_root) or target.is_dir():
                    raise ArtifactError(f"{p}: a symbolic link; an artifact holds regular files only")
                if name in filenames:
                    yield p.relative_to(root).as_posix(), p
            elif name in filenames:
                if not stat.S_ISREG(st.st_mode):
                    raise ArtifactError(f"{p}: not a regular file")
                yield p.relative_to(root).as_posix(), p


def _check_header(
    root: Path, raw: dict[str, Any], kind: str | Iterable[str] | None, max_version: int | None
) -> tuple[str, int, dict[str, Any]]:
    """The manifest's kind, version and file list, checked against what the caller reads."""
    mpath = root / MANIFEST
    got_kind, version, files = raw.get("kind"), raw.get("version"), raw.get("files")
    kinds = (kind,) if isinstance(kind, str) else (tuple(kind) if kind is not None else None)
    if not isinstance(got_kind, str) or (kinds is not None and got_kind not in kinds):
        want = kinds[0] if kinds and len(kinds) == 1 else list(kinds or ())
        raise ArtifactError(f"{root}: holds an artifact of kind {got_kind!r}, not {want!r}")
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{mpath}: version must be a positive integer, got {version!r}")
    if max_version is not None and version > max_version:
        raise ArtifactError(
            f"{root}: {got_kind} format version {version} is newer than this ximgctx reads ({max_version}); "
            f"upgrade ximgctx"
        )
    if not isinstance(files, dict):
        raise ArtifactError(f"{mpath}: 'files' must be a mapping of path -> {{sha256, bytes}}")
    return got_kind, version, files


def _refuse_unlisted(root: Path, present: dict[str, Path], files: dict[str, Any]) -> None:
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        raise ArtifactError(
            f"{root / unlisted[0]}: not listed in {MANIFEST}"
            + (f" (and {len(unlisted) - 1} more files)" if len(unlisted) > 1 else "")
            + "; an artifact may hold only the files its manifest lists"
        )


def _open_listed(p: Path, link_root: Path | None) -> int:
    """Open a listed file for reading without following a link (a link into ``link_root`` is resolved once,
    and its target opened the same way); only a regular file."""
    if link_root is not None and os.path.islink(p):
        target = p.resolve()
        if not target.is_relative_to(link_root):
            raise ArtifactError(f"{p}: a symbolic link; an artifact holds regular files only")
        p = target
    try:
        fd = os.open(
            p, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except FileNotFoundError:
        raise ArtifactError(f"{p}: listed in {MANIFEST} but missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ArtifactError(f"{p}: a symbolic link; an artifact holds regular files only") from None
        raise ArtifactError(f"{p}: unreadable ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"{p}: not a regular file")
    return fd


@contextlib.contextmanager
def pinned_copy(
    path: str | os.PathLike[str],
    kind: str | Iterable[str] | None = None,
    *,
    expected_sha256: str,
    max_version: int | None = None,
    link_root: str | os.PathLike[str] | None = None,
) -> Iterator[Manifest]:
    """Verify a pinned artifact while copying it into a private temporary folder; yield its manifest, whose
    ``path`` is the copy (removed when the block ends).

    What a pinned load reads is then exactly what was hashed: each listed file is opened once (no link
    followed), hashed while it is copied, and the copy is what the caller loads, so a file swapped or
    rewritten in the original folder after the check cannot reach the load. The manifest is read once too:
    its digest and its list come from the same bytes.
    """
    root = Path(path).absolute()
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such folder")
    lroot = Path(link_root).resolve() if link_root is not None else None
    fd = _open_listed(root / MANIFEST, lroot)
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_MANIFEST_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256.strip().lower():
        raise ArtifactError(
            f"{root}: artifact digest {digest} does not match the expected {expected_sha256}; "
            f"this is not the artifact that was pinned"
        )
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{root / MANIFEST}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{root / MANIFEST}: not an ximgctx artifact manifest (format={_short(raw)})")
    got_kind, version, files = _check_header(root, raw, kind, max_version)
    present = {rel: p for rel, p in _walk(root, lroot) if rel != MANIFEST}
    _refuse_unlisted(root, present, files)
    with tempfile.TemporaryDirectory(prefix="ximgctx-pinned-") as tmp:
        dest = Path(tmp) / root.name
        dest.mkdir(mode=0o700)
        (dest / MANIFEST).write_bytes(data)
        for rel, info in files.items():
            _check_relpath(rel, root / MANIFEST)
            if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
                raise ArtifactError(f"{root / MANIFEST}: entry for {rel!r} has no sha256")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            h, size = hashlib.sha256(), 0
            with os.fdopen(_open_listed(root / rel, lroot), "rb") as src, open(out, "xb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            if size != info.get("bytes") or h.hexdigest() != info["sha256"]:
                raise ArtifactError(
                    f"{root / rel}: changed while it was being loaded (it no longer matches {MANIFEST}); "
                    f"refusing to load it"
                )
        given = raw.get("meta")
        yield Manifest(
            path=dest,
            kind=got_kind,
            version=version,
            files=files,
            digest=digest,
            meta=given if isinstance(given, dict) else {},
        )


def verify_artifact(
    path: str | os.PathLike[str],
    kind: str | Iterable[str] | None = None,
    *,
    max_version: int | None = None,
    expected_sha256: str | None = None,
    link_root: str | os.PathLike[str] | None = None,
) -> Manifest:
    """Check a saved folder completely before anything in it is read; return its manifest.

    Args:
        path: the artifact folder.
        kind: the kind (or kinds) the caller can read; another kind is refused.
        max_version: the newest format version of that kind this code reads.
        expected_sha256: pin: the artifact's digest (``artifact_digest``) must equal it.
        link_root: allow symlinks whose target is a file inside this folder (a Hugging Face cache).

    Raises:
        ArtifactError: naming the file that is missing, unlisted, altered, outside the folder or a link.
    """
    root = Path(path).absolute()
    raw = _read_manifest(root, Path(link_root).resolve() if link_root is not None else None)
    mpath = root / MANIFEST
    got_kind, version, files = _check_header(root, raw, kind, max_version)
    if expected_sha256 is not None:
        digest = sha256_file(mpath)
        if digest != expected_sha256.strip().lower():
            raise ArtifactError(
                f"{root}: artifact digest {digest} does not match the expected {expected_sha256}; "
                f"this is not the artifact that was pinned"
            )
    lroot = Path(link_root).resolve() if link_root is not None else None
    present = {rel: p for rel, p in _walk(root, lroot) if rel != MANIFEST}
    for rel, info in files.items():
        _check_relpath(rel, mpath)
        if rel == MANIFEST:
            raise ArtifactError(f"{mpath}: lists itself")
        f = root / rel
        if rel not in present:
            raise ArtifactError(f"{f}: listed in {MANIFEST} but missing")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise ArtifactError(f"{mpath}: entry for {rel!r} has no sha256")
        size = present[rel].stat().st_size
        if info.get("bytes") != size:
            raise ArtifactError(
                f"{f}: {size} bytes, but {MANIFEST} says {info.get('bytes')!r}; "
                f"the file was altered or truncated after saving"
            )
        digest = sha256_file(present[rel])
        if digest != info["sha256"]:
            raise ArtifactError(
                f"{f}: SHA-256 {digest[:16]}... does not match {MANIFEST} ({info['sha256'][:16]}...); "
                f"the file was altered or corrupted after saving. Refusing to load it."
            )
    _refuse_unlisted(root, present, files)
    given = raw.get("meta")
    meta: dict[str, Any] = given if isinstance(given, dict) else {}
    return Manifest(
        path=root, kind=got_kind, version=version, files=files, digest=sha256_file(mpath), meta=meta
    )


# ---------------------------------------------------------------------------------------------- write
def _protected(path: Path) -> bool:
    """The working folder, its ancestors, the home folder and the filesystem root are never replaced."""
    cwd = Path.cwd().resolve()
    return (
        path == cwd or cwd.is_relative_to(path) or path == Path.home().resolve() or path == Path(path.anchor)
    )


def check_output_folder(
    path: str | os.PathLike[str],
    kind: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Refuse an output folder whose replacement would destroy data; return its resolved path.

    Allowed: a path that does not exist, an empty folder, a folder holding an artifact of the same ``kind``,
    or anything but a protected folder with ``overwrite=True``. Never: a folder that is, or holds, one of
    ``inputs``; the working folder or one above it.
    """
    out = Path(path).resolve()
    for inp in inputs:
        if inp is None:
            continue
        ip = Path(inp).resolve()
        if ip == out or ip.is_relative_to(out):
            raise OutputError(
                f"{out}: is also an input ({inp}); writing there would destroy it. Choose another output"
            )
    if _protected(out):
        raise OutputError(
            f"{out}: is the working folder or one above it; refusing to replace it. Choose another output"
        )
    if not os.path.lexists(out):
        return out
    if out.is_symlink() or not out.is_dir():
        if overwrite and not out.is_dir():
            return out
        raise OutputError(
            f"{out}: exists and is not a folder ximgctx wrote; refusing to replace it"
            + ("" if overwrite else " (pass --overwrite / overwrite=True to replace it)")
        )
    entries = sorted(os.listdir(out))
    if not entries or overwrite:
        return out
    found = artifact_kind(out)
    if found == kind:
        return out
    what = (
        f"an artifact of kind {found!r}"
        if found
        else f"{len(entries)} entries that are not an ximgctx {kind}"
    )
    raise OutputError(
        f"{out}: holds {what} (e.g. {entries[0]!r}); refusing to replace it. "
        f"Choose another output, or pass --overwrite (overwrite=True) to replace it"
    )


def _manifest_files(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for rel, p in sorted(_walk(root, None)):
        if rel == MANIFEST:
            raise ArtifactError(f"{p}: {MANIFEST} is written by write_artifact, not by its caller")
        files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return files


def _manifest_bytes(kind: str, version: int, files: dict[str, Any], meta: dict[str, Any] | None) -> bytes:
    from ximgctx.version import __version__

    raw = {"format": FORMAT, "kind": kind, "version": version, "ximgctx_version": __version__, "files": files}
    if meta:
        raw["meta"] = meta
    return (json.dumps(raw, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def seal_folder(
    root: str | os.PathLike[str], kind: str, *, version: int = 1, meta: dict | None = None
) -> str:
    """Write the manifest of a complete folder in place (for folders written by another library, such as a
    checkpoint, before they are renamed into place); return the artifact digest."""
    root = Path(root)
    data = _manifest_bytes(kind, version, _manifest_files(root), meta)
    (root / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def write_artifact(
    path: str | os.PathLike[str],
    kind: str,
    *,
    version: int = 1,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    meta: dict[str, Any] | None = None,
) -> Iterator[Path]:
    """Write an artifact atomically: yields an empty temporary folder to fill; on a clean exit the manifest is
    written and the folder renamed to ``path``; on an error the temporary folder is removed.

    The destination is checked first (:func:`check_output_folder`) and locked while written
    (:func:`folder_lock`). File-system failures (disk full, read-only, permission) become one
    :class:`OutputError` naming ``path``.
    """
    out = check_output_folder(path, kind, overwrite=overwrite, inputs=inputs)
    with output_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        tmp = None
        try:
            with output_errors(out):
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            yield tmp
            with output_errors(out):
                seal_folder(tmp, kind, version=version, meta=meta)
                check_output_folder(out, kind, overwrite=overwrite)  # nothing appeared meanwhile
                if os.path.lexists(out) and not out.is_dir():
                    out.unlink()
                replace_folder(tmp, out)
            tmp = None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an OSError while writing ``path`` (disk full, read-only, permission denied) into one
    OutputError."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        reason = {
            errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }.get(e.errno or 0, e.strerror or str(e))
        raise OutputError(f"{path}: cannot write the output: {reason}") from e


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = ()
) -> Iterator[Path]:
    """Write one output file atomically: yields a uniquely named temporary path beside ``path``; on a clean
    exit it replaces ``path``, on an error it is removed. Refuses a ``path`` that is one of ``inputs``."""
    out = Path(path).absolute()
    for inp in inputs:
        if inp is not None and Path(inp).resolve() == out.resolve():
            raise OutputError(
                f"{out}: is also an input; writing there would destroy it. Choose another output"
            )
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; expected a file path for the output")
    tmp = None
    try:
        with output_errors(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
            os.close(fd)
            tmp = Path(name)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the output gets open()'s usual mode
        yield tmp
        with output_errors(out):
            os.replace(tmp, out)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


# ----------------------------------------------------------------------------------------------- lock
def _open_lock_file(lock: Path, out: Path) -> int:
    """Create the lock file exclusively, or open the one a holder (or a crashed holder) left: never through a
    symlink (``O_NOFOLLOW``), and only a plain file with one link, so a planted ``.NAME.lock`` pointing at (or
    hard-linked to) another file cannot make the lock truncate it."""
    flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    with output_errors(out):
        try:
            return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        try:
            fd = os.open(lock, flags | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:  # the holder removed it in between: create it on the next try
            return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OutputError(f"{lock}: the lock file of {out} is a symlink; remove it") from None
            raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OutputError(f"{lock}: the lock file of {out} is not a plain file with one link; remove it")
    return fd


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str]) -> Iterator[Path]:
    """An advisory, non-blocking lock on an output (file ``.NAME.lock`` beside it, holding the holder's pid).

    A second process locking the same output fails at once with an OutputError naming the first one's pid.
    The lock is released, and its file removed, when the block ends; a crashed holder's lock is released by
    the kernel. After locking, the file is checked to still be the one at the path (a holder removing it as a
    newcomer opened it would otherwise leave two holders).
    """
    out = Path(path).absolute()
    lock = out.parent / f".{out.name}.lock"
    with output_errors(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        fd = _open_lock_file(lock, out)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(
                f"{out}: in use by another ximgctx process (pid {holder}); wait for it to finish or choose "
                f"another output"
            ) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file as we opened it: take the new one
    else:  # pragma: no cover - twenty lost races in a row
        raise OutputError(f"{out}: could not take its lock ({lock})")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def open_text_out(path: str | Path, *, inputs: Iterable[str | Path | None] = ()) -> Iterator[TextIO]:
    """A text output: stdout for ``-``, else a file written atomically (refusing a path that is an input)."""
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_output(path, inputs=inputs) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f
