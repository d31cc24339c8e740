"""FileIO: a local file or folder sent through storage; its content type and data type."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikproxy import FileIO
from ikproxy.testing import TINY_PNG


def test_content_type_is_sniffed_then_guessed_from_the_name(tmp_path: Path) -> None:
    video = tmp_path / "clip.bin"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)
    assert FileIO(video).content_type == "video/mp4"
    image = tmp_path / "noext"
    image.write_bytes(TINY_PNG)
    assert FileIO(image).content_type == "image/png"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert FileIO(text).content_type == "text/plain"
    unknown = tmp_path / "blob"
    unknown.write_bytes(b"\x01\x02")
    assert FileIO(unknown).content_type == "application/octet-stream"
    assert FileIO(unknown, content_type="video/webm").content_type == "video/webm"


def test_a_folder(tmp_path: Path) -> None:
    file_io = FileIO(tmp_path)
    assert file_io.is_dir
    assert file_io.content_type == "inode/directory"
    assert file_io.filename == tmp_path.name


def test_data_type_is_checked_and_there_is_no_wire_form(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match="data_type must be one of file_path, folder_path, image, video, not 'movie'",
    ):
        FileIO(tmp_path, data_type="movie")
    file_io = FileIO(tmp_path / "x.mp4", data_type="video", filename="holiday.mp4")
    assert (file_io.data_type, file_io.filename) == ("video", "holiday.mp4")
    assert file_io == FileIO(tmp_path / "x.mp4", data_type="video", filename="holiday.mp4")
    with pytest.raises(TypeError, match="uploads it to storage"):
        file_io.to_json()
