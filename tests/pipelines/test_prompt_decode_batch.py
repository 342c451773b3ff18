"""``geoseg prompt`` decodes the prompts of an encoder batch's windows in one decoder call
(consecutive windows holding as many prompts together), with the masks of window-by-window
decoding."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geoseg.errors import GeosegError
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.sam import SamPrompter
from geoseg.pipelines.importing import ImportOptions, import_model
from geoseg.pipelines.prompt import PromptOptions, prompt_scene
from tests.conftest import textured_scene, write_raster
from tests.models.sam2_folders import sam2_folder
from tests.pipelines.test_prompt import H, T, W, box_layer

#: Three boxes (scene px ``col0, row0, col1, row1``) far apart: three windows.
APART = [(20, 30, 60, 80), (420, 40, 470, 90), (300, 450, 350, 500)]
#: Two more boxes beside the first: its window holds three prompts.
BESIDE = [(70, 30, 100, 60), (30, 90, 70, 120)]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    data = (textured_scene(H, W, 3) // 16).astype(np.uint8)
    return write_raster(tmp_path / "scene.tif", data, transform=T, descriptions=("R", "G", "B"))


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record ``(windows, prompts per window)`` of each decoder call."""
    calls: list[tuple[int, int]] = []
    real = SamPrompter._decode

    def spy(self: SamPrompter, embeddings: Any, points: Any, labels: Any, boxes: Any,
            keep: str) -> Any:  # fmt: skip
        calls.append(boxes.shape[:2])
        return real(self, embeddings, points, labels, boxes, keep)

    monkeypatch.setattr(SamPrompter, "_decode", spy)
    return calls


def test_an_encoder_batch_is_decoded_in_one_call_per_prompt_count(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _calls(monkeypatch)
    layer = box_layer(tmp_path / "b.gpkg", APART + BESIDE)
    opts = PromptOptions(boxes=str(layer), device="cpu", batch_size=4)
    result = prompt_scene(image, sam, tmp_path / "o.tif", opts)
    assert result.windows == 3
    # the window of three prompts, then the two windows of one prompt together
    assert calls == [(1, 3), (2, 1)]


@pytest.fixture(scope="module")
def sam2(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("sam2")
    opts = ImportOptions(("R", "G", "B"))
    return str(import_model(sam2_folder(root / "f", video=False), root / "s.safetensors",
                            opts).output)  # fmt: skip


@pytest.mark.parametrize("model", ["sam", "sam2"])
def test_one_call_gives_the_masks_of_window_by_window_decoding(
    model: str, sam: str, sam2: str
) -> None:
    prompter = load_predictor(model_spec(sam if model == "sam" else sam2, "cpu"))
    rng = np.random.default_rng(0)
    size = prompter.size
    pixels = rng.integers(0, 255, (3, 3, size, size)).astype(np.uint8)
    embeddings = prompter.encode(pixels, np.ones((3, size, size), bool))
    boxes = np.array([[[10, 20, 60, 90], [30, 30, 50, 70]], [[0, 0, 40, 40], [5, 60, 90, 120]],
                      [[70, 10, 120, 40], [20, 20, 30, 30]]], np.float64)  # fmt: skip
    together = prompter.decode_windows(list(embeddings), boxes=boxes, keep="all")
    assert together.logits.shape == (3, 2, 3, size, size)
    for b in range(3):
        alone = prompter.decode(embeddings[b], boxes=boxes[b], keep="all")
        np.testing.assert_allclose(together.logits[b], alone.logits, atol=1e-4)
        np.testing.assert_allclose(together.scores[b], alone.scores, atol=1e-5)
    best = prompter.decode_windows(list(embeddings), boxes=boxes, keep="best")
    pick = together.scores.argmax(axis=2)
    assert best.scores[..., 0] == pytest.approx(np.take_along_axis(together.scores, pick[..., None],
                                                                   2)[..., 0])  # fmt: skip


def test_batched_and_window_by_window_runs_write_the_same_raster(
    image: Path, sam: str, tmp_path: Path
) -> None:
    layer = box_layer(tmp_path / "b.gpkg", APART + BESIDE)
    outs = []
    for batch in (1, 4):
        opts = PromptOptions(boxes=str(layer), device="cpu", batch_size=batch)
        prompt_scene(image, sam, tmp_path / f"o{batch}.tif", opts)
        with rasterio.open(tmp_path / f"o{batch}.tif") as src:
            outs.append(src.read())
    assert outs[0][1].max() > 0
    np.testing.assert_array_equal(outs[0], outs[1])


def test_batches_are_decoded_in_a_worker_thread_in_order_and_its_errors_surface(
    image: Path, sam: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[str]] = {"encode": [], "decode": []}
    encode, decode = SamPrompter.encode, SamPrompter._decode

    def spy_encode(self: SamPrompter, *args: Any) -> Any:
        threads["encode"].append(threading.current_thread().name)
        return encode(self, *args)

    def spy_decode(self: SamPrompter, *args: Any) -> Any:
        threads["decode"].append(threading.current_thread().name)
        if len(threads["decode"]) == 2 and fail:
            raise GeosegError("decoder failed")
        return decode(self, *args)

    monkeypatch.setattr(SamPrompter, "encode", spy_encode)
    monkeypatch.setattr(SamPrompter, "_decode", spy_decode)
    layer = box_layer(tmp_path / "b.gpkg", APART + BESIDE)
    opts = PromptOptions(boxes=str(layer), device="cpu", batch_size=1)
    fail = False
    seen: list[tuple[int, int]] = []
    result = prompt_scene(image, sam, tmp_path / "o.tif", opts,
                          progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert result.windows == 3 and result.objects == 5
    assert threads["encode"] == [threading.main_thread().name] * 3
    assert len(threads["decode"]) == 3
    assert all(name.startswith("geoseg-decode") for name in threads["decode"])
    assert seen == [(1, 3), (2, 3), (3, 3)]
    fail = True
    threads["decode"].clear()
    with pytest.raises(GeosegError, match="decoder failed"):
        prompt_scene(image, sam, tmp_path / "failed.tif", opts)
    assert not (tmp_path / "failed.tif").exists()
