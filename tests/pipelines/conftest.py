"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest

from tests.models.sam_folders import imported_sam


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny test SAM (:func:`~tests.models.sam_folders.imported_sam`), imported once per
    test module: the path of its checkpoint."""
    return imported_sam(tmp_path_factory.mktemp("sam"))
