"""Contract test over every registered model family (geoseg/models/registry.py).

Each family: build a tiny model -> save a checkpoint -> load its predictor -> predict
a window -> tile a multi-chunk scene, identical whatever the chunk size -> ``geoseg
models FILE`` describes it. A family registered without a tiny recipe here fails.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.errors import CheckpointError, UnknownModelError
from geoseg.io.checkpoint import read_checkpoint_meta, save_checkpoint
from geoseg.models import registry
from geoseg.models.cache import load_predictor, model_spec
from geoseg.models.family import TASKS, Family, fixed_multiple
from geoseg.pipelines.instances import predict_instances
from geoseg.pipelines.predict import PredictOptions, predict_scene
from geoseg.stitching import InstancePredictor
from geoseg.types import MODEL_TASKS, ClassInfo, ClassSchema, ModelMeta, Normalization
from tests.conftest import TINY_BANDS, textured_scene, write_raster
from tests.models.hf_folders import (
    MASK2FORMER,
    MASK2FORMER_TRAINED,
    MASKFORMER,
    ONEFORMER,
    SEGFORMER,
    labelled,
)

THINGS = ClassSchema(
    (ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "building", (200, 0, 0), is_thing=True))
)
CLASSES = ClassSchema((ClassInfo(1, "forest", (0, 120, 0)), ClassInfo(4, "water", (0, 0, 200))))
SMALL_UNET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
#: Two dates of two bands each, named as `geoseg stack` names them.
PAIR_BANDS = ("t1_B04", "t1_B08", "t2_B04", "t2_B08")
#: family name -> the band names of its tiny checkpoint and scene (default: TINY_BANDS).
BANDS = {"siamese-change": PAIR_BANDS}

#: family name -> (task, arch, encoder, schema, options) of a tiny checkpoint.
TINY: dict[str, tuple[str, str, str, ClassSchema, dict[str, Any]]] = {
    "smp": ("semantic", "unet", "resnet18", CLASSES, SMALL_UNET),
    "fcn": ("semantic", "fcn", "resnet50", CLASSES, {}),
    "early-fusion-change": ("change", "unet", "resnet18", CLASSES, SMALL_UNET),
    "siamese-change": ("change", "siam-diff", "resnet18", CLASSES, SMALL_UNET),
    "bottom-up": ("instance", "unet", "resnet18", THINGS, SMALL_UNET),
    "maskrcnn": ("instance", "maskrcnn", "resnet18", THINGS,
                 {"fpn_channels": 16, "representation_size": 32}),
    "solov2": ("instance", "solov2", "resnet18", THINGS,
               {"fpn_channels": 16, "head_channels": 16, "head_convs": 1, "mask_channels": 16,
                "score_threshold": 0.005, "update_threshold": 0.0}),
    "condinst": ("instance", "condinst", "resnet18", THINGS,
                 {"fpn_channels": 16, "head_channels": 16, "head_convs": 1,
                  "branch_channels": 16, "score_threshold": 0.005}),
    "panoptic-deeplab": ("panoptic", "panoptic-deeplab", "resnet18", THINGS,
                         {"body": "unet", **SMALL_UNET}),
    "transformers": ("semantic", "hf-segformer", "SegformerForSemanticSegmentation", CLASSES,
                     {"hf_config": labelled(SEGFORMER, ["forest", "water"], channels=4)}),
    "ensemble": ("semantic", "ensemble", "resnet18", CLASSES,
                 {"members": 2, "member_arch": "unet", "member_options": SMALL_UNET}),
    "mask2former": ("semantic", "mask2former", "resnet18", CLASSES, MASK2FORMER_TRAINED),
}  # fmt: skip

#: family name -> tiny checkpoints of its other tasks or architectures (fields of :data:`TINY`).
OTHER_TASKS: dict[str, list[tuple[str, str, str, ClassSchema, dict[str, Any]]]] = {
    "early-fusion-change": [("change", "early", "resnet18", CLASSES, SMALL_UNET)],
    "siamese-change": [("change", "siam-conc", "tu-resnet18", CLASSES, SMALL_UNET)],
    "ensemble": [("change", "ensemble", "resnet18", CLASSES,
                  {"members": 3, "member_arch": "early", "member_options": SMALL_UNET})],
    "transformers": [
        ("instance", "hf-mask2former", "Mask2FormerForUniversalSegmentation", THINGS,
         {"hf_config": labelled(MASK2FORMER, ["background", "building"], channels=4),
          "score_threshold": 0.1}),
        ("panoptic", "hf-maskformer", "MaskFormerForInstanceSegmentation", THINGS,
         {"hf_config": labelled(MASKFORMER, ["background", "building"], channels=4),
          "score_threshold": 0.1}),
        ("instance", "hf-oneformer", "OneFormerForUniversalSegmentation", THINGS,
         {"hf_config": labelled(ONEFORMER, ["background", "building"], channels=4),
          "score_threshold": 0.1, "task_inputs": [0, 6, 12, 15, 29, 1] + [0] * 6}),
    ],
    "mask2former": [
        ("instance", "mask2former", "resnet18", THINGS,
         {**MASK2FORMER_TRAINED, "score_threshold": 0.1}),
        ("panoptic", "mask2former", "resnet18", THINGS,
         {**MASK2FORMER_TRAINED, "score_threshold": 0.1}),
    ],
}  # fmt: skip

WINDOW, MARGIN = 64, 8
STRIDE = WINDOW - 2 * MARGIN


def _imported_onnx(path: Path) -> Path:
    """A tiny random ONNX graph brought in with ``geoseg import`` (no module to build)."""
    from geoseg.pipelines.importing import ImportOptions, import_model
    from tests.models.onnx_graphs import conv_graph

    graph = conv_graph(path.with_suffix(".onnx"), classes=len(CLASSES))
    opts = ImportOptions(TINY_BANDS, CLASSES, WINDOW, MARGIN, (0.2,) * 4, (0.1,) * 4, 1e4, 10.0)
    return import_model(graph, path, opts).output


def _imported_sam(path: Path) -> Path:
    """A tiny random SAM folder brought in with ``geoseg import`` (4 bands: adapted patches)."""
    from geoseg.pipelines.importing import ImportOptions, import_model
    from tests.models.sam_folders import sam_folder

    folder = sam_folder(path.parent / "sam_folder")
    return import_model(folder, path, ImportOptions(TINY_BANDS, scale=1e4)).output


def _imported_sam2(path: Path) -> Path:
    """A tiny random SAM 2 video folder brought in with ``geoseg import`` (4 bands)."""
    from geoseg.pipelines.importing import ImportOptions, import_model
    from tests.models.sam2_folders import sam2_folder

    folder = sam2_folder(path.parent / "sam2_folder")
    return import_model(folder, path, ImportOptions(TINY_BANDS, scale=1e4)).output


#: family name -> recipe of a tiny checkpoint, for families that import rather than build.
IMPORTED = {"onnx": _imported_onnx, "sam": _imported_sam, "sam2": _imported_sam2}


def tiny_checkpoint(family: Family, path: Path, recipe: int = -1) -> Path:
    """A randomly initialised checkpoint of ``family`` for :data:`TINY_BANDS`
    (``recipe``: of :data:`OTHER_TASKS`; -1: :data:`TINY`)."""
    if family.name in IMPORTED:
        return IMPORTED[family.name](path)
    if family.name not in TINY:
        pytest.fail(f"family {family.name!r} has no tiny recipe in {__file__}: add one")
    found = TINY[family.name] if recipe < 0 else OTHER_TASKS[family.name][recipe]
    task, arch, encoder, schema, options = found
    meta = ModelMeta(
        task=task, arch=arch, encoder=encoder, bands=BANDS.get(family.name, TINY_BANDS),
        normalization=Normalization((0.2,) * 4, (0.1,) * 4, scale=1e-4), schema=schema,
        window=WINDOW, margin=MARGIN, gsd_m=10.0, options=options,
    )  # fmt: skip
    assert family.build is not None
    torch.manual_seed(0)
    module = family.build(meta)
    return save_checkpoint(path, module.state_dict(), meta)


def scene(tmp_path: Path, bands: tuple[str, ...] = TINY_BANDS) -> Path:
    """A 4-band 150 x 173 px scene: several chunks of one or three strides."""
    return write_raster(tmp_path / "scene.tif", textured_scene(150, 173), descriptions=bands)


def tiled(model: str, image: Path, out: Path, chunk: int, objects: bool) -> bytes:
    """Every pixel of the map ``model`` makes of ``image`` with ``chunk`` px chunks."""
    opts = PredictOptions(chunk=chunk, device="cpu", batch_size=3)
    if objects:
        predict_instances(image, model, out, opts)
    else:
        predict_scene(image, model, out, opts)
    with rasterio.open(out) as src:
        return bytes(src.read().tobytes())


def models_text(*args: str) -> str:
    result = CliRunner().invoke(cli, ["models", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.name)
def test_family_contract(family: Family, tmp_path: Path) -> None:
    check_contract(family, -1, tmp_path)


OTHER = [(f, i) for f in registry.families() for i in range(len(OTHER_TASKS.get(f.name, [])))]
OTHER_IDS = [f"{f.name}-{OTHER_TASKS[f.name][i][1]}" for f, i in OTHER]


@pytest.mark.parametrize(("family", "recipe"), OTHER, ids=OTHER_IDS)
def test_family_contract_other_tasks(family: Family, recipe: int, tmp_path: Path) -> None:
    check_contract(family, recipe, tmp_path)


def test_every_task_of_a_family_has_a_tiny_recipe() -> None:
    for family in registry.families():
        if family.weights_free:
            continue
        # an imported family's recipe (IMPORTED) makes its first task
        first = TINY[family.name][0] if family.name in TINY else family.tasks[0]
        tasks = {first, *(r[0] for r in OTHER_TASKS.get(family.name, []))}
        assert sorted(tasks) == sorted(family.tasks), family.name


def check_contract(family: Family, recipe: int, tmp_path: Path) -> None:
    """Build, save, load, predict a window, tile at two chunk sizes, describe."""
    if family.inputs == "prompts":
        check_prompt_contract(family, tmp_path)
        return
    image = scene(tmp_path, BANDS.get(family.name, TINY_BANDS))
    task = family.tasks[0]
    if family.weights_free:
        model = family.name
        assert family.name in registry.available_models()
    else:
        model = str(tiny_checkpoint(family, tmp_path / "tiny.safetensors", recipe))
        task = read_checkpoint_meta(model).task
        assert registry.checkpoint_family(read_checkpoint_meta(model)) is family
        predictor = load_predictor(model_spec(model, "cpu"))
        batch = textured_scene(WINDOW, WINDOW)[None].repeat(2, axis=0).astype(np.float32)
        valid = np.ones((2, WINDOW, WINDOW), bool)
        probs = predictor.predict(batch, valid)
        assert probs.shape == (2, len(predictor.schema), WINDOW, WINDOW)
        assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
        if TASKS[task].objects:
            assert isinstance(predictor, InstancePredictor)
            assert len(predictor.predict_instances(batch, valid)) == 2
        text = models_text(model)
        assert f"family: {family.name}" in text and f"task: {task}" in text
    objects = TASKS[task].objects
    small = tiled(model, image, tmp_path / "a.tif", STRIDE, objects)
    large = tiled(model, image, tmp_path / "b.tif", 3 * STRIDE, objects)
    assert small == large
    assert family.describe()[0] in models_text()


def check_prompt_contract(family: Family, tmp_path: Path) -> None:
    """A prompt family: import tiny -> load -> encode a window and decode a box on it ->
    `geoseg prompt` a scene -> describe; per-pixel prediction is refused."""
    from geoseg.models.sam import SamPrompter
    from geoseg.pipelines.prompt import PromptOptions, prompt_scene

    model = str(tiny_checkpoint(family, tmp_path / "tiny.safetensors"))
    meta = read_checkpoint_meta(model)
    assert registry.checkpoint_family(meta) is family and meta.task == "prompt"
    prompter = load_predictor(model_spec(model, "cpu"))
    assert isinstance(prompter, SamPrompter)
    side = prompter.size
    batch = textured_scene(side, side)[None].astype(np.float32)
    valid = np.ones((1, side, side), bool)
    decoded = prompter.decode(prompter.encode(batch, valid)[0], boxes=np.array([[9.0, 9, 99, 99]]),
                              keep="all")  # fmt: skip
    assert decoded.logits.shape == (1, 3, side, side) and decoded.scores.shape == (1, 3)
    assert np.isfinite(decoded.logits).all()
    with pytest.raises(CheckpointError, match="geoseg prompt"):
        prompter.predict(batch, valid)
    out = tmp_path / "objects.tif"
    prompt_scene(scene(tmp_path), model, out, PromptOptions(point="500400,5099400", device="cpu"))
    with rasterio.open(out) as src:
        assert set(np.unique(src.read(2))) <= {0, 1} and src.count == 2
    text = models_text(model)
    assert f"family: {family.name}" in text and "task: prompt" in text
    assert family.describe()[0] in models_text()


def test_every_checkpoint_task_has_a_kind_and_a_family() -> None:
    assert tuple(TASKS) == MODEL_TASKS
    served = {t for f in registry.families() for t in f.tasks}
    assert served == set(MODEL_TASKS)
    # prompt checkpoints (SAM) are imported, not trained here
    assert registry.training_tasks() == tuple(t for t in MODEL_TASKS if t != "prompt")


def test_shipped_checkpoints_keep_their_families() -> None:
    root = Path(__file__).resolve().parents[2] / "sample_data" / "models"
    found = {
        p.name: registry.checkpoint_family(read_checkpoint_meta(p)).name
        for p in sorted(root.glob("*.safetensors"))
    }
    assert found == {
        "buildings_spacenet.safetensors": "bottom-up",
        "landcover_s2.safetensors": "smp",
        "water_s2.safetensors": "smp",
    }


@pytest.mark.parametrize(
    ("task", "arch", "family"),
    [
        ("semantic", "UNet", "smp"),
        ("semantic", "fcn", "fcn"),
        ("change", "deeplabv3plus", "early-fusion-change"),
        ("change", "early", "early-fusion-change"),
        ("change", "Siam-Diff", "siamese-change"),
        ("change", "siam-conc", "siamese-change"),
        ("instance", "unet", "bottom-up"),
        ("instance", "maskrcnn", "maskrcnn"),
        ("instance", "SOLOv2", "solov2"),
        ("instance", "CondInst", "condinst"),
        ("panoptic", "fpn", "panoptic-deeplab"),
        ("semantic", "Mask2Former", "mask2former"),
        ("instance", "mask2former", "mask2former"),
        ("panoptic", "mask2former", "mask2former"),
    ],
)
def test_training_family_by_task_and_arch(task: str, arch: str, family: str) -> None:
    assert registry.training_family(task, arch).name == family


@pytest.mark.parametrize(
    ("task", "arch", "listed"),
    [
        ("semantic", "maskrcnn", "unet, unetplusplus, deeplabv3plus, pspnet, fpn, segformer, fcn"),
        ("panoptic", "fcn", "unet, unetplusplus, deeplabv3plus, pspnet, fpn, segformer"),
        ("semantic", "siam-diff", "segformer, fcn, mask2former$"),
        ("instance", "condinst-x", "maskrcnn, solov2, .*mask2former$"),
        ("change", "siamese", "early, unet, .*, fcn, siam-diff, siam-conc$"),
        ("depth", "unet", "semantic, change, instance, panoptic"),
    ],
)
def test_unknown_names_list_the_valid_ones(task: str, arch: str, listed: str) -> None:
    with pytest.raises(UnknownModelError, match=listed):
        registry.training_family(task, arch)


def test_unknown_checkpoint_family_lists_the_known_ones() -> None:
    meta = ModelMeta(
        task="instance", arch="yolact", encoder=None, bands=TINY_BANDS,
        normalization=Normalization((0.0,) * 4, (1.0,) * 4), schema=THINGS,
        window=64, margin=8, gsd_m=10.0,
    )  # fmt: skip
    with pytest.raises(UnknownModelError, match="instance/maskrcnn") as err:
        registry.checkpoint_family(meta)
    assert "yolact" in str(err.value) and "instance/solov2" in str(err.value)
    assert "panoptic/panoptic-deeplab" in str(err.value)


def test_cli_choices_come_from_the_registry() -> None:
    result = CliRunner().invoke(cli, ["train", "--task", "depth"])
    assert result.exit_code == 2
    assert "'semantic', 'change', 'instance', 'panoptic'" in result.output
    result = CliRunner().invoke(cli, ["train", "--arch", "resnet"])
    assert result.exit_code == 2
    assert "'fcn', 'early', 'siam-diff', 'siam-conc', 'maskrcnn'" in result.output
    result = CliRunner().invoke(cli, ["predict", "s.tif", "-m", "x", "-o", "o", "--task", "change"])
    assert result.exit_code == 2 and "'semantic', 'instance', 'panoptic'" in result.output


def _constant_family() -> Family:
    """A weights-free family that calls every valid pixel class 0 with certainty."""

    class Constant:
        schema = ClassSchema((ClassInfo(0, "everything", (9, 9, 9)),))
        bands = ("any",)

        def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
            return np.ones((batch.shape[0], 1, *batch.shape[2:]), np.float32)

    return Family(
        name="constant", summary="every pixel is class 0", tasks=("semantic",),
        archs=("constant",), load=lambda spec, meta: Constant(),
        window_multiple=fixed_multiple(1), source="numpy", weights_free=True,
        schema=Constant.schema,
    )  # fmt: skip


def test_a_new_family_is_one_module_and_one_registration_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("constant_family")
    module.FAMILY = _constant_family()  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "constant_family", module)
    monkeypatch.setattr(registry, "FAMILY_MODULES", (*registry.FAMILY_MODULES, "constant_family"))
    registry.families.cache_clear()
    load_predictor.cache_clear()
    try:
        assert "constant  every pixel is class 0" in models_text()
        out = tmp_path / "c.tif"
        predict_scene(scene(tmp_path), "constant", out, PredictOptions(chunk=96))
        with rasterio.open(out) as src:
            assert (src.read(1) == 0).all()
    finally:
        registry.families.cache_clear()
        load_predictor.cache_clear()
