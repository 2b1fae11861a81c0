"""Reed `text_c10` caption reading and joining (jointcap.data.captions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointcap.data.captions import CaptionError, caption_path, join_captions, read_captions, read_class_list


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_reads_stripped_non_empty_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.txt", b"".join(b" line %d \r\n\n" % i for i in range(10)))
    assert read_captions(path) == [f"line {i}" for i in range(10)]


@pytest.mark.parametrize(
    "data,text",
    [(b"one\n" * 9, "9 caption lines, need at least 10"), ("\u00e9\n".encode("latin-1") * 10, "not valid UTF-8")],
)
def test_bad_files_name_the_file(tmp_path: Path, data: bytes, text: str) -> None:
    path = _write(tmp_path / "bad.txt", data)
    with pytest.raises(CaptionError, match=text) as err:
        read_captions(path)
    assert str(path) in str(err.value)


def test_join_by_file_name_and_skip(tmp_path: Path) -> None:
    text = tmp_path / "text_c10"
    _write(caption_path(text, "class_00001", "image_00001.jpg"), b"good\n" * 10)
    _write(caption_path(text, "class_00001", "image_00002.jpg"), b"short\n" * 3)
    pairs = [("class_00001", "image_00001.jpg"), ("class_00001", "image_00002.jpg"), ("class_00002", "image_00003.jpg")]
    with pytest.raises(CaptionError, match="image_00002.txt"):
        join_captions(text, pairs)
    captions, skipped = join_captions(text, pairs, skip_bad=True)
    assert list(captions) == ["image_00001.jpg"] and captions["image_00001.jpg"] == ["good"] * 10
    assert [s.key for s in skipped] == ["image_00002.jpg", "image_00003.jpg"]
    assert "caption file missing" in skipped[1].reason


def test_missing_folder_and_class_list(tmp_path: Path) -> None:
    with pytest.raises(CaptionError, match="caption folder missing"):
        join_captions(tmp_path / "nope", [])
    with pytest.raises(CaptionError, match="testclasses.txt: class list missing"):
        read_class_list(tmp_path / "testclasses.txt")
