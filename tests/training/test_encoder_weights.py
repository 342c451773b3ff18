"""``geoseg train --encoder-weights``: timm, torchgeo, SSL4EO/MoCo, smp and geoseg key names,
first-convolution band rules, loading without unpickling, one clear error for weights that
do not fit, and a short end-to-end run whose checkpoint records where the encoder came from."""

from __future__ import annotations

import builtins
import functools
import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import save_file

from geoseg.cli import cli
from geoseg.errors import CheckpointError, EncoderWeightsError, GeosegError, InputNotFoundError
from geoseg.io.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from geoseg.io.state_dicts import StateDict, read_state_dict
from geoseg.models.encoder_weights import load_encoder_weights
from geoseg.models.registry import build_model
from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import load_train_config
from geoseg.types import ModelMeta, Normalization
from tests.conftest import TINY_BANDS, TINY_SCHEMA

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
#: torchgeo's Sentinel-2 ResNet weights take all 13 L1C bands in this order.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip
RGB = ("B04", "B03", "B02")


@functools.cache
def _timm(arch: str = "resnet18", in_chans: int = 3) -> dict[str, torch.Tensor]:
    """A randomly initialised timm ResNet's state dict (torchgeo's files are exactly these)."""
    torch.manual_seed(len(arch) + in_chans)
    return dict(timm.create_model(arch, in_chans=in_chans).state_dict())


def _moco(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An SSL4EO MoCo checkpoint: query encoder with an MLP head, momentum copy, queue, epoch."""
    query = {f"module.encoder_q.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    head = {"module.encoder_q.fc.0.weight": torch.randn(512, 512),
            "module.encoder_q.fc.2.weight": torch.randn(128, 512)}  # fmt: skip
    momentum = {f"module.encoder_k.{k}": torch.full_like(v, 7) for k, v in sd.items()}
    inner = {**query, **head, **momentum, "module.queue": torch.randn(128, 16)}
    return {"state_dict": inner, "epoch": 200, "arch": "resnet18"}


def _smp() -> dict[str, torch.Tensor]:
    import segmentation_models_pytorch as smp

    torch.manual_seed(5)
    return dict(smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict())


#: scheme -> (what the file holds, the encoder tensors by timm name, wrapper prefix, bands)
SCHEMES: dict[str, Any] = {
    "timm": lambda: (_timm(), _timm(), "", RGB),
    "torchgeo": lambda: (_timm(in_chans=13), _timm(in_chans=13), "", S2_BANDS),
    "ssl4eo_moco": lambda: (_moco(_timm()), _timm(), "module.encoder_q.", RGB),
    "smp": lambda: (_smp(), _smp(), "", RGB),
}


def _save(obj: Any, path: Path) -> Path:
    if path.suffix == ".pth":
        torch.save(obj, path)
    else:  # safetensors holds one flat mapping: a MoCo file is saved as its inner state dict
        flat = obj.get("state_dict", obj)
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    return path


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_naming_scheme_starts_the_encoder_with_the_files_tensors(
    scheme: str, suffix: str, encoder: str, tmp_path: Path
) -> None:
    held, expected, prefix, bands = SCHEMES[scheme]()
    path = _save(held, tmp_path / f"weights{suffix}")
    model = build_model("unet", encoder, len(bands), 3, **SMALL_NET)
    info = load_encoder_weights(model, read_state_dict(path), encoder, bands)
    got = model.encoder.state_dict()  # type: ignore[operator]
    assert len(got) == (60 if encoder.startswith("tu-") else 120)  # depth 3 drops 2 stages
    for key, value in got.items():
        assert torch.equal(value, expected[key.removeprefix("model.")]), key
    assert info["prefix"] == prefix
    assert info["tensors"] == len(got)
    assert info["first_conv"] == f"copied ({len(bands)} bands, by position)"
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["format"] == ("torch" if suffix == ".pth" else "safetensors")


def _in_memory(tensors: dict[str, torch.Tensor], bands: tuple[str, ...] | None = None) -> StateDict:
    return StateDict(Path("weights.pth"), tensors, bands, "0" * 64, "torch")


def _first_conv(n_bands: int, file: StateDict, **kw: Any) -> tuple[torch.Tensor, str]:
    scene = kw.pop("scene", tuple(f"S{i}" for i in range(n_bands)))
    model = build_model("unet", "resnet18", n_bands, 3, **SMALL_NET)
    info = load_encoder_weights(model, file, "resnet18", scene, **kw)
    return model.encoder.conv1.weight.detach(), info["first_conv"]  # type: ignore[union-attr]


def test_rgb_kernels_repeat_cyclically_over_more_bands_scaled_by_3_over_n() -> None:
    rgb = _timm()["conv1.weight"]
    weight, rule = _first_conv(5, _in_memory(_timm()))
    assert weight.shape == (64, 5, 7, 7)
    for band in range(5):
        torch.testing.assert_close(weight[:, band], rgb[:, band % 3] * 3 / 5)
    assert rule == "RGB kernels repeated cyclically over 5 bands, scaled by 3/5"


def test_rgb_kernels_sum_into_one_band() -> None:
    weight, rule = _first_conv(1, _in_memory(_timm()))
    torch.testing.assert_close(weight[:, 0], _timm()["conv1.weight"].sum(dim=1))
    assert rule == "RGB kernels summed into 1 band"


def test_sentinel2_weights_give_the_scene_bands_by_name() -> None:
    s2 = _timm(in_chans=13)["conv1.weight"]
    scene = ("B2", "B03", "b04", "B08")  # spellings of the same bands
    weight, rule = _first_conv(4, _in_memory(_timm(in_chans=13)), scene=scene,
                               file_bands=S2_BANDS)  # fmt: skip
    assert torch.equal(weight, s2[:, [1, 2, 3, 7]])
    assert rule == "channels [1, 2, 3, 7] of 13 picked by band name"


def test_a_geoseg_checkpoint_gives_its_encoder_and_its_bands(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = build_model("fpn", "resnet18", 4, 3, **SMALL_NET)  # another arch, same encoder
    norm = Normalization((0.0,) * 4, (1.0,) * 4)
    meta = ModelMeta("semantic", "fpn", "resnet18", TINY_BANDS, norm, TINY_SCHEMA,
                     options=SMALL_NET)  # fmt: skip
    path = save_checkpoint(tmp_path / "lc.safetensors", trained.state_dict(), meta)
    scene = tuple(reversed(TINY_BANDS))
    model = build_model("unet", "resnet18", 4, 3, **SMALL_NET)
    info = load_encoder_weights(model, read_state_dict(path), "resnet18", scene)
    source = trained.encoder.state_dict()  # type: ignore[operator]
    for key, value in model.encoder.state_dict().items():  # type: ignore[operator]
        want = source[key][:, [3, 2, 1, 0]] if key == "conv1.weight" else source[key]
        assert torch.equal(value, want), key
    assert (info["prefix"], info["format"]) == ("encoder.", "geoseg")
    assert info["first_conv"] == "channels [3, 2, 1, 0] of 4 picked by band name"


def test_timm_features_only_names_map_to_timm_names() -> None:
    torch.manual_seed(2)
    sd = dict(timm.create_model("convnext_atto").state_dict())  # stem.0 is stem_0 in smp
    model = build_model("unet", "tu-convnext_atto", 3, 3, **SMALL_NET)
    info = load_encoder_weights(model, _in_memory(sd), "tu-convnext_atto", RGB)
    got = model.encoder.state_dict()  # type: ignore[operator]
    assert torch.equal(got["model.stem_0.weight"], sd["stem.0.weight"])
    assert torch.equal(got["model.stages_1.blocks.0.mlp.fc1.weight"],
                       sd["stages.1.blocks.0.mlp.fc1.weight"])  # fmt: skip
    assert info["tensors"] == len(got)


def _drop(key: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in _timm().items() if k != key}


def _twice() -> dict[str, torch.Tensor]:
    return {**{f"backbone.{k}": v for k, v in _timm().items()},
            **{f"encoder.{k}": v for k, v in _timm().items()}}  # fmt: skip


#: case -> (file tensors, file band names, scene bands, encoder, phrases of the one error)
MISFITS: dict[str, tuple[Any, ...]] = {
    "deeper resnet34 into resnet18": (
        lambda: _timm("resnet34"), None, RGB, "resnet18",
        ["not weights of a resnet18 encoder", "unexpected 96: ['layer1.2.conv1.weight'",
         "A resnet18 encoder has 120 tensors (conv1.weight (64, 3, 7, 7)", "pass --encoder"],
    ),
    "another arch and other bands: the keys are named first": (
        lambda: _timm("resnet34", in_chans=13), None, TINY_BANDS, "resnet18",
        ["unexpected 96: ['layer1.2.conv1.weight'"],
    ),
    "bottleneck resnet50 into resnet18": (
        lambda: _timm("resnet50"), None, RGB, "resnet18",
        ["wrong shape 23: ['layer1.0.conv1.weight (64, 64, 1, 1) != (64, 64, 3, 3)'"],
    ),
    "resnet18 into the deeper resnet34": (
        lambda: _timm(), None, RGB, "resnet34", ["missing 80: ['layer1.2.conv1.weight'"],
    ),
    "one tensor missing": (
        lambda: _drop("layer2.0.bn1.weight"), None, RGB, "resnet18",
        ["missing 1: ['layer2.0.bn1.weight']"],
    ),
    "not a resnet at all": (
        lambda: {"blocks.0.weight": torch.zeros(3)}, None, RGB, "resnet18",
        ["missing 100: ['conv1.weight', 'bn1.weight', 'bn1.bias']"],
    ),
    "13 unnamed bands for a 4-band scene": (
        lambda: _timm(in_chans=13), None, TINY_BANDS, "resnet18",
        ["weights.pth: the weights' first convolution takes 13 bands, the scene 4 (B02, B03",
         "--encoder-bands"],
    ),
    "named bands lacking one of the scene's": (
        lambda: _timm(in_chans=13), S2_BANDS, ("B02", "B03", "B04", "NIR"), "resnet18",
        ["lacking NIR"],
    ),
    "band names of the wrong length": (
        lambda: _timm(in_chans=13), TINY_BANDS, TINY_BANDS, "resnet18",
        ["takes 13 bands, but 4 band names were given"],
    ),
    "two encoders in one file": (
        _twice, None, RGB, "resnet18", ["under both 'encoder.' and 'backbone.'"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MISFITS))
def test_weights_that_do_not_fit_give_one_error_naming_what_was_expected(case: str) -> None:
    tensors, file_bands, scene, encoder, phrases = MISFITS[case]
    model = build_model("unet", encoder, len(scene), 3, **SMALL_NET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EncoderWeightsError) as err:
        load_encoder_weights(model, _in_memory(tensors()), encoder, scene, file_bands)
    for phrase in phrases:
        assert phrase in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "untouched"


def test_a_model_without_an_encoder_is_refused() -> None:
    with pytest.raises(EncoderWeightsError, match="a Sequential has no encoder to start"):
        load_encoder_weights(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)),
                             _in_memory(_timm()), "resnet18", RGB)  # fmt: skip


class _Payload:
    """Unpickling this object would create ``marker``: the file carries code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.open, (str(self.marker), "w")


def _bomb_zip(path: Path, marker: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "hook": _Payload(marker)}, path)


def _bomb_legacy(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(marker)))


#: case -> (write the file (path, side-effect marker), error class, phrase)
BAD_FILES: dict[str, tuple[Any, ...]] = {
    "zip .pth with a code-carrying object": (
        _bomb_zip, CheckpointError, "geoseg refuses to run it"),
    "plain pickle renamed .pth": (_bomb_legacy, CheckpointError, "torch.load(weights_only=True)"),
    "text file": (lambda p, m: p.write_text("not weights"), CheckpointError,
                  "not a PyTorch weights file"),
    "no tensors inside": (lambda p, m: torch.save({"epoch": 3, "lr": 0.1}, p), CheckpointError,
                          "holds no state dict (found ['epoch', 'lr'])"),
    "truncated safetensors": (
        lambda p, m: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}"),
        CheckpointError, "not a readable safetensors file"),
    "missing file": (lambda p, m: None, InputNotFoundError, "no such weights file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_weights_files_are_refused_without_running_them(case: str, tmp_path: Path) -> None:
    write, error, phrase = BAD_FILES[case]
    path, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    write(path, marker)
    assert not marker.exists(), "writing the file must not run the payload"
    with pytest.raises(error) as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and phrase in str(err.value)
    assert not marker.exists(), "reading the file ran code from it"


def test_a_config_file_names_the_weights_relative_to_itself_and_bands_as_text(
    tmp_path: Path,
) -> None:
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "train.yaml"
    config.write_text(yaml.safe_dump({
        "images": ["a.tif"], "labels": ["a_lc.tif"], "classes": TRUTH_SCHEMA.to_json(),
        "output": "m.safetensors", "encoder_weights": "w/backbone.pth",
        "encoder_bands": "B01, B02,B03", "bands": "B02,B03",
    }))  # fmt: skip
    cfg = load_train_config(config)
    assert cfg.encoder_weights == str(tmp_path / "cfg" / "w" / "backbone.pth")
    assert cfg.encoder_bands == ("B01", "B02", "B03")
    assert cfg.bands == ("B02", "B03")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_data(tmp_path_factory.mktemp("sample"), height=96, width=96, seed=4)


def _train(sample: dict[str, Path], tmp_path: Path, *extra: str) -> tuple[Any, Path]:
    torch.set_num_threads(1)
    classes, config = tmp_path / "classes.yaml", tmp_path / "net.yaml"
    classes.write_text(yaml.safe_dump(TRUTH_SCHEMA.to_json()))
    config.write_text(yaml.safe_dump({"options": SMALL_NET, "encoder": "tu-resnet18"}))
    out = tmp_path / "m.safetensors"
    args = [
        "train", "--image", sample["before"], "--labels", sample["truth_before"],
        "--classes", classes, "--config", config, "-o", out, "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--window", "32", "--device", "cpu",
        "--lr", "1e-12", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args]), out


def test_geoseg_train_starts_from_sentinel2_weights_and_records_them(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    weights = _save(_timm(in_chans=13), tmp_path / "resnet18_sentinel2_all_moco.pth")
    result, out = _train(sample, tmp_path, "--encoder-weights", weights,
                         "--encoder-bands", ",".join(S2_BANDS))  # fmt: skip
    assert result.exit_code == 0, result.output
    tensors, meta = load_checkpoint(out)
    picks = [S2_BANDS.index(b) for b in meta.bands]  # B02 B03 B04 B08 B11 B12
    assert picks == [1, 2, 3, 7, 11, 12]
    source = _timm(in_chans=13)
    # lr 1e-12: one short run leaves the started kernels where they were put
    torch.testing.assert_close(tensors["encoder.model.conv1.weight"],
                               source["conv1.weight"][:, picks], atol=1e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(tensors["encoder.model.layer2.1.conv2.weight"],
                               source["layer2.1.conv2.weight"], atol=1e-6, rtol=0)  # fmt: skip
    recorded = meta.provenance["encoder_weights"]
    assert recorded["file"] == "resnet18_sentinel2_all_moco.pth"
    assert recorded["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert recorded["first_conv"] == "channels [1, 2, 3, 7, 11, 12] of 13 picked by band name"


def test_geoseg_train_refuses_a_pickle_bomb_in_one_line_and_writes_nothing(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    weights, marker = tmp_path / "backbone.pth", tmp_path / "pwned"
    _bomb_zip(weights, marker)
    result, out = _train(sample, tmp_path, "--encoder-weights", weights)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(weights) in lines[0] and "weights_only=True" in lines[0]
    assert not marker.exists() and not out.exists()
    with pytest.raises(GeosegError):
        read_checkpoint_meta(out)
