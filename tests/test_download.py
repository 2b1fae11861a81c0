"""Fetch + verify + safe extraction (jointcap.data.download), against a local HTTP server."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from jointcap.data import download as dl
from jointcap.data.download import ArchiveError, ChecksumError, MissingFileError, Remote, UnsafeArchiveError
from tests.helpers.realdata import add_text, md5_of, write_tar


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    """A served folder holding one good archive `pack.tgz` with top-level folder `pack/`."""
    served = tmp_path / "served"
    served.mkdir()
    write_tar(served / "pack.tgz", {"pack/a.txt": b"alpha", "pack/sub/b.txt": b"beta", "other.txt": b"x"})
    return served


def test_fetch_verifies_renames_and_marks(serve, archive_dir: Path, tmp_path: Path) -> None:
    server = serve(archive_dir)
    remote = Remote("pack.tgz", md5_of(archive_dir / "pack.tgz"), server.url("pack.tgz"))
    root = tmp_path / "root"
    folder = dl.ensure_extracted(remote, root / "pack.tgz", "pack", download=True)
    assert (folder / "sub" / "b.txt").read_bytes() == b"beta"
    assert not (root / "other.txt").exists()  # only the wanted top-level folder is kept
    assert remote.md5 is not None
    assert dl.is_marked(root / "pack.tgz", remote.md5)
    assert sorted(p.name for p in root.iterdir()) == [".pack.extracted", "pack", "pack.tgz", "pack.tgz.verified"]
    before = len(server.requests)
    dl.ensure_extracted(remote, root / "pack.tgz", "pack", download=True)
    assert len(server.requests) == before  # nothing fetched again


def test_wrong_md5_download_leaves_nothing(serve, archive_dir: Path, tmp_path: Path) -> None:
    server = serve(archive_dir)
    actual = md5_of(archive_dir / "pack.tgz")
    remote = Remote("pack.tgz", "0" * 32, server.url("pack.tgz"))
    with pytest.raises(ChecksumError) as err:
        dl.ensure_extracted(remote, tmp_path / "root" / "pack.tgz", "pack", download=True)
    msg = str(err.value)
    assert "pack.tgz" in msg and "0" * 32 in msg and actual in msg
    assert list((tmp_path / "root").iterdir()) == []


def test_wrong_md5_local_file_is_quarantined(tmp_path: Path) -> None:
    (tmp_path / "pack.tgz").write_bytes(b"not what we want")
    remote = Remote("pack.tgz", "0" * 32, "http://127.0.0.1:9/pack.tgz")
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        dl.ensure_file(remote, tmp_path / "pack.tgz", download=False)
    assert not (tmp_path / "pack.tgz").exists() and (tmp_path / "pack.tgz.bad").exists()


def test_offline_missing_file_names_url_md5_and_place(tmp_path: Path) -> None:
    remote = Remote("pack.tgz", "ab" * 16, "https://example.org/data/pack.tgz")
    with pytest.raises(MissingFileError) as err:
        dl.ensure_extracted(remote, tmp_path / "pack.tgz", "pack", download=False)
    msg = str(err.value)
    for part in (
        "pack.tgz",
        "https://example.org/data/pack.tgz",
        "ab" * 16,
        str(tmp_path / "pack.tgz"),
        str(tmp_path / "pack"),
    ):
        assert part in msg


def test_unreachable_server_names_file_and_url(tmp_path: Path, serve) -> None:
    server = serve(tmp_path)  # serves an empty folder: 404
    remote = Remote("pack.tgz", None, server.url("pack.tgz"))
    with pytest.raises(MissingFileError, match="pack.tgz.*download failed"):
        dl.ensure_file(remote, tmp_path / "root" / "pack.tgz", download=True)
    assert not (tmp_path / "root" / "pack.tgz.part").exists()


def test_no_checksum_warns_and_accepts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "f.bin").write_bytes(b"data")
    dl.ensure_file(Remote("f.bin", None), tmp_path / "f.bin", download=False)
    assert "no checksum" in caplog.text


def test_sidecar_avoids_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"data")
    remote = Remote("f.bin", md5_of(path))
    dl.ensure_file(remote, path, download=False)
    monkeypatch.setattr(dl, "calculate_md5", lambda p: pytest.fail("hashed again"))
    dl.ensure_file(remote, path, download=False)


def test_truncated_archive_is_refused_and_moved_aside(tmp_path: Path) -> None:
    write_tar(tmp_path / "pack.tgz", {f"pack/{i}.bin": bytes(range(256)) * 64 for i in range(20)})
    data = (tmp_path / "pack.tgz").read_bytes()
    (tmp_path / "pack.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="pack.tgz.*truncated"):
        dl.ensure_extracted(Remote("pack.tgz", None), tmp_path / "pack.tgz", "pack", download=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack.tgz.bad"]


def test_archive_without_expected_folder(tmp_path: Path) -> None:
    write_tar(tmp_path / "pack.tgz", {"elsewhere/a.txt": b"a"})
    with pytest.raises(ArchiveError, match="expected a top-level folder 'pack'"):
        dl.safe_extract(tmp_path / "pack.tgz", tmp_path, "pack")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack.tgz"]


def _tar_with(path: Path, member: tarfile.TarInfo, plain: bool = False) -> Path:
    with tarfile.open(path, "w" if plain else "w:gz") as tar:
        add_text(tar, "pack/ok.txt", "fine")
        tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


UNSAFE = {
    "dotdot": _member("pack/../../evil.txt"),
    "absolute": _member("/tmp/jointcap-evil.txt"),
    "symlink-out": _member("pack/link", tarfile.SYMTYPE, "../../outside"),
    "symlink-absolute": _member("pack/link", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink-out": _member("pack/hard", tarfile.LNKTYPE, "../outside"),
    "device": _member("pack/dev", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("plain", [False, True], ids=["tgz", "tar"])
@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused(tmp_path: Path, case: str, plain: bool) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = _tar_with(work / "pack.tgz", UNSAFE[case], plain)
    with pytest.raises(UnsafeArchiveError) as err:
        dl.safe_extract(archive, work, "pack")
    assert str(archive) in str(err.value) and UNSAFE[case].name in str(err.value)
    assert sorted(p.name for p in work.iterdir()) == ["pack.tgz"]  # nothing extracted, no temp left
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()


def test_symlink_chain_out_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with tarfile.open(work / "pack.tgz", "w:gz") as tar:
        tar.addfile(_member("pack/link", tarfile.SYMTYPE, "."))  # harmless alone…
        tar.addfile(_member("pack/link/../../evil.txt"), io.BytesIO(b"evil"))  # …lexically inside, really outside
    with pytest.raises(UnsafeArchiveError, match="pack/link"):
        dl.safe_extract(work / "pack.tgz", work, "pack")
    assert sorted(p.name for p in work.iterdir()) == ["pack.tgz"]


@pytest.mark.parametrize(
    "member",
    [_member("pack/sub/link", tarfile.SYMTYPE, "../ok.txt"), _member("pack/hard", tarfile.LNKTYPE, "pack/ok.txt")],
    ids=["symlink", "hardlink"],
)
def test_links_inside_are_refused_too(tmp_path: Path, member: tarfile.TarInfo) -> None:
    """The real archives hold no links; any link, even one pointing inside, is refused."""
    archive = _tar_with(tmp_path / "pack.tgz", member)
    with pytest.raises(UnsafeArchiveError, match="hold no links"):
        dl.safe_extract(archive, tmp_path, "pack")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack.tgz"]


def test_cve_2025_4517_path_max_symlink_chain_is_refused(tmp_path: Path) -> None:
    """Nested symlinks longer than PATH_MAX (realpath stops resolving), then a file written through them."""
    work, outside = tmp_path / "a" / "work", tmp_path / "a"
    work.mkdir(parents=True)
    comp, steps, path = "d" * 247, "abcdefghijklmnop", "pack"
    with tarfile.open(work / "pack.tgz", "w:gz") as tar:
        tar.addfile(_member("pack", tarfile.DIRTYPE))
        for step in steps:
            tar.addfile(_member(f"{path}/{comp}", tarfile.DIRTYPE))
            tar.addfile(_member(f"{path}/{step}", tarfile.SYMTYPE, comp))
            path = f"{path}/{comp}"
        link = "pack/" + "/".join(steps) + "/" + "l" * 254
        tar.addfile(_member(link, tarfile.SYMTYPE, "../" * len(steps)))
        tar.addfile(_member("pack/escape", tarfile.SYMTYPE, link.removeprefix("pack/") + "/../../.."))
        tar.addfile(_member("pack/escape/evil.txt"), io.BytesIO(b"evil"))
    with pytest.raises(UnsafeArchiveError):
        dl.safe_extract(work / "pack.tgz", work, "pack")
    assert sorted(p.name for p in work.iterdir()) == ["pack.tgz"]
    assert not list(outside.rglob("evil.txt")) and not (tmp_path / "evil.txt").exists()


def _remote(archive: Path) -> Remote:
    return Remote(archive.name, md5_of(archive))


def test_replaced_archive_is_extracted_again(tmp_path: Path) -> None:
    write_tar(tmp_path / "pack.tgz", {"pack/a.txt": b"old"})
    folder = dl.ensure_extracted(_remote(tmp_path / "pack.tgz"), tmp_path / "pack.tgz", "pack", download=False)
    assert (folder / "a.txt").read_bytes() == b"old"
    write_tar(tmp_path / "pack.tgz", {"pack/a.txt": b"new"})
    (tmp_path / "pack.tgz.verified").unlink()
    dl.ensure_extracted(_remote(tmp_path / "pack.tgz"), tmp_path / "pack.tgz", "pack", download=False)
    assert (folder / "a.txt").read_bytes() == b"new"


def test_folder_without_stamp_beside_its_archive_is_extracted_again(tmp_path: Path) -> None:
    write_tar(tmp_path / "pack.tgz", {"pack/a.txt": b"good"})
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "a.txt").write_bytes(b"a bad extraction")
    dl.ensure_extracted(_remote(tmp_path / "pack.tgz"), tmp_path / "pack.tgz", "pack", download=False)
    assert (tmp_path / "pack" / "a.txt").read_bytes() == b"good"


def test_folder_without_archive_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "a.txt").write_bytes(b"by hand")
    folder = dl.ensure_extracted(Remote("pack.tgz", "0" * 32), tmp_path / "pack.tgz", "pack", download=False)
    assert (folder / "a.txt").read_bytes() == b"by hand"


def test_leftovers_of_a_killed_extraction_are_removed(tmp_path: Path) -> None:
    write_tar(tmp_path / "pack.tgz", {"pack/a.jpg": b"jpg"})
    (tmp_path / ".pack.extract-deadbeef" / "pack").mkdir(parents=True)
    (tmp_path / ".pack.extract-deadbeef" / "pack" / "a.jpg.extract-1234").write_bytes(b"half")
    dl.ensure_extracted(_remote(tmp_path / "pack.tgz"), tmp_path / "pack.tgz", "pack", download=False)
    assert not list(tmp_path.glob(".pack.extract-*"))


def test_concurrent_extractions_extract_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs (say, two image sizes of a sweep) extracting one archive at once: one extraction, both see it."""
    import threading
    import time

    write_tar(tmp_path / "pack.tgz", {"pack/a.txt": b"alpha"})
    calls: list[int] = []
    real = dl.safe_extract

    def slow_extract(*args):
        calls.append(1)
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(dl, "safe_extract", slow_extract)
    remote, errors = _remote(tmp_path / "pack.tgz"), []

    def job() -> None:
        try:
            folder = dl.ensure_extracted(remote, tmp_path / "pack.tgz", "pack", download=False)
            assert (folder / "a.txt").read_bytes() == b"alpha"
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert len(calls) == 1


def test_concurrent_ensure_file_downloads_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs asking for the same archive at once: one download, both get the verified file."""
    import hashlib
    import threading
    import time

    calls: list[int] = []
    payload = b"archive bytes" * 1000

    def slow_transfer(remote: Remote, part: Path) -> None:  # stands in for the network
        calls.append(1)
        time.sleep(0.3)
        part.write_bytes(payload)

    monkeypatch.setattr(dl, "_transfer", slow_transfer)
    remote = Remote("a.tgz", hashlib.md5(payload).hexdigest(), url="http://127.0.0.1:9/a.tgz")
    dest = tmp_path / "a.tgz"
    errors: list[BaseException] = []

    def job() -> None:
        try:
            dl.ensure_file(remote, dest, True)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert dest.read_bytes() == payload
    assert len(calls) == 1
