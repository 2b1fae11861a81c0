"""Fetch, verify and safely extract dataset files (generic: knows nothing about CUB or Flowers).

A `Remote` names one file, where it comes from (a URL, or a Google Drive id) and its md5.
`ensure_file` makes sure a verified copy lies at a given path (reusing a local copy, else
downloading to `name.part` and renaming it only after the checksum passed); a `.verified`
sidecar records a passed check so later runs do not hash gigabytes again. `ensure_extracted`
extracts an archive into a temporary folder and renames the wanted top-level folder into
place, refusing members that could land outside the target: `..`, absolute paths, devices and
every link (symbolic or hard; the real dataset archives hold none, and link chains longer than
PATH_MAX defeat path checks on unpatched Pythons, CVE-2025-4517). A `.NAME.extracted` stamp
ties the extracted folder to the archive it came from (size, mtime, md5), so a replaced archive
is extracted again; extraction runs under a per-folder file lock (jobs sharing a data root).
The network transfer itself is torchvision's (`download_url`, `download_file_from_google_drive`),
with its progress bar.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from filelock import FileLock
from torchvision.datasets.utils import calculate_md5, download_file_from_google_drive, download_url
from tqdm.auto import tqdm

from jointcap.data.cache import remove_paths

log = logging.getLogger(__name__)
T = TypeVar("T")


class DataFileError(RuntimeError):
    """A dataset file is missing, corrupt, unsafe or malformed; the message names the file."""


class MissingFileError(DataFileError):
    """A file is not present and may not (or could not) be downloaded."""


class ChecksumError(DataFileError):
    """A file's md5 differs from the configured one."""


class ArchiveError(DataFileError):
    """An archive is truncated, unreadable or lacks the expected folder."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the extraction folder."""


@dataclass(frozen=True)
class Remote:
    """One downloadable file: its local name, md5 (None: unchecked) and a URL or a Google Drive id.

    A plain `url` wins over `gdrive_id` when both are set (so a mirror or a test server can
    replace a Drive file); with neither, the file must already be present locally.
    """

    filename: str
    md5: str | None = None
    url: str | None = None
    gdrive_id: str | None = None

    @property
    def where(self) -> str:
        """Human-readable origin, for error messages."""
        if self.url:
            return self.url
        if self.gdrive_id:
            return f"https://drive.google.com/uc?id={self.gdrive_id}"
        return "(no URL configured)"


def expand_root(root: str | os.PathLike) -> Path:
    """Expand `~` and environment variables in a configured data root."""
    return Path(os.path.expandvars(os.path.expanduser(str(root))))


# ---------------------------------------------------------------- checksums and the sidecar


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def mark_verified(path: Path, md5: str) -> None:
    """Record that `path` (at its current size and mtime) matched `md5`."""
    _sidecar(path).write_text(json.dumps({"md5": md5, **_stat_key(path)}))


def is_marked(path: Path, md5: str) -> bool:
    """True when a sidecar says `path`, unchanged since, matched `md5`."""
    try:
        mark = json.loads(_sidecar(path).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return mark == {"md5": md5, **_stat_key(path)}


def quarantine(path: Path) -> Path:
    """Move a bad file aside (`name.bad`) so no later run trusts it, and drop its sidecar."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    _sidecar(path).unlink(missing_ok=True)
    return bad


def check_checksum(path: Path, md5: str, shown_as: Path | None = None) -> None:
    """Hash `path` and raise ChecksumError (naming file, expected and actual md5) on mismatch."""
    actual = calculate_md5(path)
    if actual != md5:
        raise ChecksumError(f"{shown_as or path}: md5 mismatch, expected {md5}, got {actual}")


def verify(path: Path, md5: str | None) -> None:
    """Check `path` against `md5` unless a sidecar already vouches for it; None: warn and accept."""
    if md5 is None:
        log.warning("%s: no checksum configured, not verified", path)
        return
    if not is_marked(path, md5):
        check_checksum(path, md5)
        mark_verified(path, md5)


# ---------------------------------------------------------------- download


def missing_message(remote: Remote, dest: Path, why: str, alternative: Path | None = None) -> str:
    """Say which file is missing, where it comes from, its checksum and where to put it by hand."""
    msg = (
        f"{remote.filename} is missing ({why}). Download it from {remote.where} "
        f"(md5 {remote.md5 or 'unknown'}) and put it at {dest}"
    )
    if alternative is not None:
        msg += f", or put its extracted folder at {alternative}"
    return msg + "."


def _transfer(remote: Remote, part: Path) -> None:
    """Download `remote` to `part` with torchvision's helpers (which show a progress bar)."""
    if remote.url:
        download_url(remote.url, str(part.parent), filename=part.name, md5=None)
    else:
        download_file_from_google_drive(remote.gdrive_id, str(part.parent), filename=part.name, md5=None)


def fetch(remote: Remote, dest: Path, alternative: Path | None = None) -> None:
    """Download `remote` to `dest.part`, verify it, then rename it to `dest`."""
    if not (remote.url or remote.gdrive_id):
        raise MissingFileError(missing_message(remote, dest, "no URL configured", alternative))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    log.info("downloading %s from %s", remote.filename, remote.where)
    try:
        _transfer(remote, part)
    except Exception as e:  # network errors, HTTP errors, gdown missing…
        part.unlink(missing_ok=True)
        raise MissingFileError(missing_message(remote, dest, f"download failed: {e}", alternative)) from e
    if remote.md5 is None:
        log.warning("%s: no checksum configured, not verified", dest)
    else:
        try:
            check_checksum(part, remote.md5, shown_as=dest)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    if remote.md5 is not None:
        mark_verified(dest, remote.md5)


def ensure_file(remote: Remote, dest: Path, download: bool, alternative: Path | None = None) -> Path:
    """Make sure a verified `dest` exists: check a local copy, else fetch it (if allowed).

    A per-file lock serialises the jobs of one machine that share a data root (a sweep
    building two caches from one archive): the second waits, then finds the first one's
    verified file. The lock lives in the temp folder, so data folders hold only data.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(_lock_path(dest)):
        return _ensure_file(remote, dest, download, alternative)


def _lock_path(dest: Path) -> str:
    """A lock file named after `dest`'s absolute path, in the system temp folder."""
    key = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"jointcap-{dest.name}-{key}.lock")


def _ensure_file(remote: Remote, dest: Path, download: bool, alternative: Path | None) -> Path:
    if dest.is_file():
        try:
            verify(dest, remote.md5)
        except ChecksumError as e:
            bad = quarantine(dest)
            raise ChecksumError(f"{e} (moved aside to {bad}; delete it and run again to re-download)") from None
        return dest
    if not download:
        raise MissingFileError(missing_message(remote, dest, "download=False", alternative))
    fetch(remote, dest, alternative)
    return dest


# ---------------------------------------------------------------- safe extraction


def _inside(name: str) -> bool:
    """True when the relative posix path `name`, normalised, never climbs above its start."""
    parts: list[str] = []
    for piece in PurePosixPath(name).parts:
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return False
            parts.pop()
        else:
            parts.append(piece)
    return True


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse a tar member that is absolute, climbs out with `..`, is a link (any kind), or is a device."""
    name = member.name
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if not _inside(name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the target folder; refusing to extract")
    if member.issym() or member.islnk():
        # No link is ever needed (the real archives hold none), and resolving links safely is what
        # CVE-2025-4517 showed to be fragile: refuse them all rather than reason about where they lead.
        kind = "symlink" if member.issym() else "hard link"
        raise UnsafeArchiveError(
            f"{archive}: {kind} {name!r} -> {member.linkname!r}; dataset archives hold no links, refusing to extract"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a device or fifo; refusing to extract")


def check_landing(archive: Path, member: tarfile.TarInfo, tmp: Path) -> None:
    """Refuse a member whose destination leaves `tmp` or passes through anything but a real folder.

    With links refused this cannot happen; it is a second line of defence that does not rely on
    `os.path.realpath` (which stops resolving past PATH_MAX): every existing path component is
    checked with lstat.
    """
    here = Path(tmp)
    for piece in PurePosixPath(member.name).parts[:-1]:
        if piece in ("", "."):
            continue
        here = here / piece
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise UnsafeArchiveError(
                f"{archive}: member {member.name!r} passes through {piece!r}, which is not a folder; "
                "refusing to extract"
            )
    top = os.path.abspath(tmp)
    dest = os.path.abspath(os.path.join(top, member.name))
    if os.path.commonpath([top, dest]) != top:
        raise UnsafeArchiveError(
            f"{archive}: member {member.name!r} resolves outside the target folder; refusing to extract"
        )


def _extract_members(archive: Path, tmp: Path) -> None:
    """Extract every (checked) member of `archive` into `tmp` in one streaming pass, with a bar."""
    size = archive.stat().st_size
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        with tqdm(total=size, unit="B", unit_scale=True, desc=f"extract {archive.name}", leave=False) as bar:
            for member in tar:
                check_member(archive, member)
                check_landing(archive, member, tmp)
                try:
                    tar.extract(member, tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extract(
                        member, tmp
                    )
                except tarfile.FilterError as e:
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} refused ({e})") from e
                bar.update(raw.tell() - bar.n)


def safe_extract(archive: Path, parent: Path, folder: str) -> Path:
    """Extract `archive`, keep its top-level `folder` as `parent/folder`; nothing half-done stays.

    The archive goes into a temporary sibling folder; only after every member extracted is
    `folder` renamed into place. A truncated or unreadable archive is moved aside (`.bad`).
    """
    target = parent / folder
    tmp = parent / f".{folder}.extract-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        try:
            _extract_members(archive, tmp)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
            bad = quarantine(archive)
            raise ArchiveError(f"{archive}: truncated or unreadable archive ({e}); moved aside to {bad}") from e
        if not (tmp / folder).is_dir():
            found = sorted(p.name for p in tmp.iterdir())
            raise ArchiveError(f"{archive}: expected a top-level folder {folder!r}, found {found}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stamp(parent: Path, folder: str) -> Path:
    """The file that ties `parent/folder` to the archive it was extracted from."""
    return parent / f".{folder}.extracted"


def _archive_stamp(archive: Path, md5: str | None) -> dict:
    return {"archive": archive.name, **_stat_key(archive), "md5": md5}


def extracted_from(archive: Path, folder: str, md5: str | None) -> bool:
    """True when `archive.parent/folder`'s stamp matches `archive` as it is now (size, mtime, md5)."""
    try:
        stamp = json.loads(_stamp(archive.parent, folder).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stamp == _archive_stamp(archive, md5)


def remove_stale_extractions(parent: Path, folder: str) -> list[Path]:
    """Delete `.FOLDER.extract-*` leftovers of killed extractions; call only holding the folder's lock."""
    return remove_paths(sorted(parent.glob(f".{folder}.extract-*")) if parent.is_dir() else [])


def ensure_extracted(remote: Remote, archive: Path, folder: str, download: bool) -> Path:
    """Return `archive.parent/folder`, extracting (and first fetching) the archive if needed.

    An extracted folder is reused when its stamp matches the archive, or when the archive is
    absent (a folder put there by hand); a folder without a matching stamp next to an archive
    (a replaced archive, an extraction from an older jointcap) is extracted again. A lock per
    folder serialises jobs sharing the data root: the second waits and finds the first's folder.
    """
    parent = archive.parent
    target = parent / folder
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(_lock_path(target)):
        remove_stale_extractions(parent, folder)
        if target.is_dir() and not archive.is_file():
            return target  # provided by hand (offline use): nothing to compare it with
        ensure_file(remote, archive, download, alternative=target)
        if target.is_dir() and extracted_from(archive, folder, remote.md5):
            return target
        if target.is_dir():
            log.warning(
                "%s: not extracted from the current %s (replaced archive or no stamp); extracting it again",
                target,
                archive.name,
            )
        log.info("extracting %s", archive)
        _stamp(parent, folder).unlink(missing_ok=True)
        safe_extract(archive, parent, folder)
        stamp = _stamp(parent, folder)
        tmp = stamp.with_name(f"{stamp.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(_archive_stamp(archive, remote.md5)))
        os.replace(tmp, stamp)
        return target


def gather_missing(*steps: Callable[[], T]) -> list[T]:
    """Run every step; if some raise MissingFileError, raise one naming all the missing files (not just the first)."""
    results, missing = [], []
    for step in steps:
        try:
            results.append(step())
        except MissingFileError as e:
            missing.append(str(e))
    if len(missing) == 1:
        raise MissingFileError(missing[0])
    if missing:
        raise MissingFileError(f"{len(missing)} dataset files are missing:\n  - " + "\n  - ".join(missing))
    return results


DATA_ROOT_ENV = "JOINTCAP_DATA"  # the data root's environment variable …
DEFAULT_DATA_ROOT = "~/.cache/jointcap"  # … and the root without it (the configs' paths.data_root reads both here)


def data_root_setting() -> str:
    """The data root as configured, unexpanded: $JOINTCAP_DATA, else ~/.cache/jointcap."""
    return os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)


def default_root() -> Path:
    """The data root when none is configured: $JOINTCAP_DATA, else ~/.cache/jointcap."""
    return expand_root(data_root_setting())
