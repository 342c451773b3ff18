"""``geoseg train --task change --arch early|siam-diff|siam-conc``: train, describe, evaluate;
the shared encoder started from ``--encoder-weights``; date augmentation recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import save_file

from geoseg.cli import cli
from geoseg.errors import GeosegError
from geoseg.io.checkpoint import load_checkpoint
from geoseg.io.stack import stack_dates
from geoseg.synthetic import write_sample_data
from tests.training.helpers import write_change_mask

SMALL_NET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}
CHANGE = [{"id": 0, "name": "no change", "colour": [9, 9, 9]},
          {"id": 1, "name": "change", "colour": [200, 0, 0]}]  # fmt: skip
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 12-band stacked pair (t1_B02 ... t2_B12), its change mask, classes and net config."""
    root = tmp_path_factory.mktemp("pair")
    sample = write_sample_data(root, height=96, width=96, seed=4)
    stacked = stack_dates([sample["before"], sample["after"]], root / "ab.tif")
    write_change_mask(sample["truth_before"], sample["truth_after"], root / "change.tif")
    (root / "classes.yaml").write_text(yaml.safe_dump(CHANGE))
    net = {"options": SMALL_NET, "encoder": "resnet18", "date_augment": True}
    (root / "net.yaml").write_text(yaml.safe_dump(net))
    return {"image": stacked, "mask": root / "change.tif", "classes": root / "classes.yaml",
            "config": root / "net.yaml"}  # fmt: skip


def _train(pair: dict[str, Path], out: Path, *extra: str) -> Any:
    torch.set_num_threads(1)
    args = [
        "train", "--task", "change", "--image", pair["image"], "--labels", pair["mask"],
        "--classes", pair["classes"], "--config", pair["config"], "-o", out, "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--window", "32", "--device", "cpu",
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    ("arch", "family"),
    [("early", "early-fusion-change"), ("siam-diff", "siamese-change"),
     ("siam-conc", "siamese-change")],
)  # fmt: skip
def test_each_change_arch_trains_describes_and_evaluates(
    pair: dict[str, Path], tmp_path: Path, arch: str, family: str
) -> None:
    out = tmp_path / f"{arch}.safetensors"
    result = _train(pair, out, "--arch", arch)
    assert result.exit_code == 0, result.output
    _, meta = load_checkpoint(out)
    assert (meta.task, meta.arch, len(meta.bands)) == ("change", arch, 12)
    # asked for in the config: the ranges are kept with the model
    assert meta.provenance["date_augment"] == {
        "colour": 0.1,
        "brightness": 0.2,
        "contrast": 0.2,
        "haze": 0.3,
        "shift_px": 2,
    }
    described = CliRunner().invoke(cli, ["models", str(out)])
    assert f"family: {family}" in described.output, described.output
    scored = CliRunner().invoke(cli, ["evaluate", "-m", str(out), "--image", str(pair["image"]),
                                      "--labels", str(pair["mask"]), "-o",
                                      str(tmp_path / "eval"), "--device", "cpu"])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert scored.output.startswith("change F1 ") and " IoU " in scored.output.splitlines()[0]


def test_date_augment_is_off_by_default(pair: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "off.yaml"
    config.write_text(yaml.safe_dump({"options": SMALL_NET}))
    out = tmp_path / "off.safetensors"
    result = _train({**pair, "config": config}, out, "--arch", "siam-diff")
    assert result.exit_code == 0, result.output
    assert "date_augment" not in load_checkpoint(out)[1].provenance


def test_swap_dates_trains_and_is_recorded_without_the_date_shift(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    config = tmp_path / "swap.yaml"
    config.write_text(yaml.safe_dump({"options": SMALL_NET, "swap_dates": True}))
    out = tmp_path / "swap.safetensors"
    result = _train({**pair, "config": config}, out, "--arch", "siam-conc")
    assert result.exit_code == 0, result.output
    provenance = load_checkpoint(out)[1].provenance
    assert provenance["swap_dates"] is True and "date_augment" not in provenance


def test_the_shared_encoder_starts_from_weights_picked_by_one_dates_band_names(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    torch.manual_seed(3)
    source = dict(timm.create_model("resnet18", in_chans=13).state_dict())
    weights = tmp_path / "resnet18_s2.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(weights))
    out = tmp_path / "started.safetensors"
    result = _train(pair, out, "--arch", "siam-conc", "--encoder", "tu-resnet18",
                    "--encoder-weights", weights, "--encoder-bands", ",".join(S2_BANDS),
                    "--lr", "1e-12")  # fmt: skip
    assert result.exit_code == 0, result.output
    tensors, meta = load_checkpoint(out)
    picks = [1, 2, 3, 7, 11, 12]  # t1_B02 ... t1_B12: one date's six bands, by name
    assert meta.provenance["encoder_weights"]["first_conv"] == (
        f"channels {picks} of 13 picked by band name"
    )
    torch.testing.assert_close(tensors["encoder.model.conv1.weight"],
                               source["conv1.weight"][:, picks], atol=1e-6, rtol=0)  # fmt: skip


def _levir_script() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "sample_data" / "models" / "train_change_levir.py"
    spec = importlib.util.spec_from_file_location("train_change_levir", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levir_comparison_summarises_seeds_and_appends_runs_of_one_setup(tmp_path: Path) -> None:
    script = _levir_script()
    runs = [{"arch": "early", "seed": s, "change_f1": f, "change_iou": f / 2}
            for s, f in enumerate((0.6, 0.7, 0.8))]  # fmt: skip
    runs.append({"arch": "siam-diff", "seed": 0, "change_f1": None, "change_iou": None})
    summary = script.summarise(runs)
    f1 = summary["early"]["change_f1"]
    assert f1["mean"] == pytest.approx(0.7) and f1["std"] == pytest.approx(0.1)
    assert (f1["min"], f1["max"], summary["early"]["seeds"]) == (0.6, 0.8, [0, 1, 2])
    assert summary["siam-diff"]["change_f1"]["mean"] is None  # no change predicted: no F1
    scores = tmp_path / "scores.json"
    args = script.parse_args(["--scores", str(scores), "--seeds", "1", "--append"])
    scores.write_text(json.dumps({"setup": script._setup(args), "runs": runs}))
    kept = script.earlier_runs(args)
    assert [(r["arch"], r["seed"]) for r in kept] == [("early", 0), ("early", 2), ("siam-diff", 0)]
    other = script.parse_args(["--scores", str(scores), "--epochs", "3", "--append"])
    with pytest.raises(GeosegError, match="append runs of the same setup"):
        script.earlier_runs(other)


def test_levir_tta_scores_are_kept_apart_and_summarised(tmp_path: Path) -> None:
    script = _levir_script()
    plain = script.parse_args([])
    d4 = script.parse_args(["--tta", "d4", "--scores", str(tmp_path / "s.json"), "--append"])
    assert "tta" not in script._setup(plain)  # files written before --tta stay appendable
    assert script._setup(d4) == {**script._setup(plain), "tta": "d4"}
    record = script._change_record(np.array([[90, 10], [30, 70]]), "_tta")
    assert record["change_f1_tta"] == pytest.approx(2 * 70 / (2 * 70 + 10 + 30))
    assert record["change_precision_tta"] == pytest.approx(70 / 80)
    assert record["change_recall_tta"] == pytest.approx(70 / 100)
    assert record["change_iou_tta"] == pytest.approx(70 / 110)
    runs = [{"arch": "siam-conc", "seed": s, "change_f1": f, "change_iou": f / 2,
             "change_f1_tta": f + 0.05, "change_iou_tta": f / 2 + 0.01}
            for s, f in enumerate((0.6, 0.7, 0.8))]  # fmt: skip
    summary = script.summarise(runs)["siam-conc"]
    assert summary["change_f1"]["mean"] == pytest.approx(0.7)
    assert summary["change_f1_tta"]["mean"] == pytest.approx(0.75)
    assert summary["change_iou_tta"]["max"] == pytest.approx(0.41)
    assert "change_f1_tta" not in script.summarise([{k: v for k, v in runs[0].items()
                                                      if "tta" not in k}])["siam-conc"]  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps({"setup": script._setup(plain), "runs": []}))
    with pytest.raises(GeosegError, match="append runs of the same setup"):
        script.earlier_runs(d4)
    with pytest.raises(SystemExit):
        script.parse_args(["--tta", "d8"])


def test_levir_setup_records_depth_swap_and_batch_and_append_keeps_other_sections(
    tmp_path: Path,
) -> None:
    script = _levir_script()
    scores = tmp_path / "scores.json"
    argv = ["--scores", str(scores), "--depth", "4", "--swap-dates", "--window", "128",
            "--batch-size", "4", "--append"]  # fmt: skip
    args = script.parse_args(argv)
    setup = script._setup(args)
    assert (setup["encoder_depth"], setup["decoder_channels"]) == (4, [128, 64, 32, 16])
    assert (setup["window"], setup["batch_size"], setup["swap_dates"]) == (128, 4, True)
    pairs = {n: (tmp_path / f"{n}_AB.tif", tmp_path / f"{n}_change.tif")
             for n in ("a", *script.VAL)}  # fmt: skip
    cfg = script._config(args, pairs, ["a"], "siam-conc", 2, tmp_path / "m.safetensors")
    assert cfg.options == {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
    assert (cfg.window, cfg.batch_size, cfg.swap_dates, cfg.date_augment) == (128, 4, True, False)
    history = {"12 epochs, date augmentation": {"early": 0.52}}
    scores.write_text(json.dumps({"setup": setup, "scored": "held_out_pairs", "runs": [],
                                  "summary": {}, "history": history}))  # fmt: skip
    assert script.carried_sections(args) == {"history": history}
    assert script.carried_sections(script.parse_args(argv[:-1])) == {}  # not appending
    assert script._report(args, ["a"], [], {"history": history})["history"] == history
    with pytest.raises(GeosegError, match="its runs scored held_out_pairs, these val_pairs"):
        script.earlier_runs(script.parse_args([*argv, "--select"]))
    with pytest.raises(SystemExit):
        script.parse_args(["--depth", "5"])
