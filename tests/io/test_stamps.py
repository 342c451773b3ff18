"""File stamps see a same-size change behind a restored mtime, in small and large files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoseg.io.stamps import WHOLE_FILE, file_stamp, scene_stamps
from tests.conftest import textured_scene, write_raster


def _rewrite(path: Path, offset: int) -> None:
    """Flip one byte at ``offset`` and put the mtime back."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    ("size", "offset"),
    [
        (1000, 500),
        (WHOLE_FILE + 1, (WHOLE_FILE + 1 - 4096) // 15 * 7 + 100),
        (8 << 20, 0),
        (8 << 20, (8 << 20) - 1),
    ],
)
def test_a_changed_byte_changes_the_stamp(tmp_path: Path, size: int, offset: int) -> None:
    """Anywhere in a small file; in a large one, in the ends or the 8th of 16 spread blocks."""
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(size))
    before = file_stamp(path)
    assert before[:2] == [size, path.stat().st_mtime_ns]
    _rewrite(path, offset)
    after = file_stamp(path)
    assert after[:2] == before[:2] and after[2] != before[2]


def test_remote_and_missing_files_get_an_empty_stamp(tmp_path: Path) -> None:
    assert file_stamp("/vsicurl/https://example.com/a.tif") == [0, 0, ""]
    assert file_stamp(tmp_path / "missing.tif") == [0, 0, ""]


def test_a_geotiff_is_stamped_with_its_sidecars(tmp_path: Path) -> None:
    tif = write_raster(tmp_path / "s.tif", textured_scene(20, 30))
    assert list(scene_stamps(tif)) == [str(tif)]
    aux = tmp_path / "s.tif.aux.xml"
    aux.write_text("<PAMDataset></PAMDataset>")
    assert list(scene_stamps(tif)) == [str(tif), str(aux)]
