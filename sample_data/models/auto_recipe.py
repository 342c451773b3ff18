"""``--auto`` for the shipped-model recipes: plan from the train block, train, compare.

The recipe's own split stays: the plan is made from the train block only (as
``geoseg train --auto`` would make it: :func:`geoseg.training.plan_file.make_plan`),
the validation block picks the epoch, and the test block is scored once with the
recipe's scoring code. Only the plan's choices differ from the recipe's (window,
margin, encoder depth, batch, normalisation, class weights, schedule); the network
family (U-Net, ``tu-resnet18``), learning rate and seed are the recipe's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from geoseg.training import load_train_config, train_model
from geoseg.training.plan_file import PlanRequest, key_lines, make_plan, plan_text
from geoseg.types import ClassSchema

#: A planned model replaces the shipped one only when its test-block mIoU is higher by
#: more than this AND its kappa (all test pixels, less swayed by a rare class) is not
#: lower. One seed per recipe is all the CPU affords, so seed spread is not measured;
#: the LEVIR change recipe's three seeds on similarly small data spread by 0.04-0.07
#: IoU (std), so a smaller gain is not told apart from a lucky seed.
MARGIN_MIOU = 0.03
#: The plan's keys recorded in the scores JSON (the choices that differ from the recipe).
PLAN_KEYS = ("window", "margin", "options", "batch_size", "normalization", "class_weights",
             "epochs", "steps_per_epoch")  # fmt: skip
#: Scores compared side by side (``EvalMetrics.to_json`` keys).
COMPARED = ("pixels", "overall_accuracy", "kappa", "miou", "mean_f1")

Pairs = list[tuple[Path, Path]]


def plan_and_train(
    name: str, parts: dict[str, Pairs], schema: ClassSchema, work: Path, budget_s: float,
    provenance: dict[str, Any], report: Callable[[Any], None], task: str = "semantic",
    **train_kw: Any,
) -> tuple[Path, float | None, float, dict[str, Any]]:  # fmt: skip
    """Plan ``name`` from ``parts["train"]`` within ``budget_s`` seconds and train it.

    ``train_kw``: the recipe's training settings the plan does not choose (loss weights).

    Returns:
        The checkpoint (in ``work``), its best validation mIoU, the training wall time
        in seconds (planning excluded) and the plan's :data:`PLAN_KEYS` values.
    """
    classes = work / f"{name}_classes.yaml"
    classes.write_text(yaml.safe_dump(schema.to_json(), sort_keys=False), encoding="utf-8")
    out = work / f"{name}_auto.safetensors"
    req = PlanRequest(
        images=tuple(str(p[0]) for p in parts["train"]),
        labels=tuple(str(p[1]) for p in parts["train"]),
        output=str(out), classes=str(classes), task=task, arch="unet", encoder="tu-resnet18",
        budget_s=budget_s, device="cpu", validated=True,  # the val block picks the epoch
    )  # fmt: skip
    entries, header = make_plan(req)
    text = plan_text(entries, header)
    plan = work / f"{name}.plan.yaml"
    plan.write_text(text, encoding="utf-8")
    print(f"{name} plan ({budget_s / 60:g} min):\n" + "\n".join(key_lines(text)), flush=True)
    raw = yaml.safe_load(text)
    cfg = load_train_config(
        plan, val_images=[str(p[0]) for p in parts["val"]],
        val_labels=[str(p[1]) for p in parts["val"]], seed=0, lr=3e-3, overwrite=True,
        provenance=dict(raw.get("provenance") or {}) | provenance, **train_kw,
    )  # fmt: skip
    t0 = time.perf_counter()
    best = train_model(cfg, report).best_miou
    return out, best, time.perf_counter() - t0, {k: raw[k] for k in PLAN_KEYS if k in raw}


def is_better(auto: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether test scores ``auto`` beat ``old`` by more than noise (:data:`MARGIN_MIOU`)."""
    return bool(auto["miou"] - old["miou"] > MARGIN_MIOU and auto["kappa"] >= old["kappa"])


def side_by_side(name: str, old: dict[str, Any], auto: dict[str, Any]) -> str:
    """A text table of the recipe's and the planned model's test scores, per class too."""
    lines = [f"{name + ' (test block)':<32}   recipe     auto  auto-recipe"]
    for key in COMPARED:
        a, b = old[key], auto[key]
        lines.append(f"  {key:<30}{a:>9.4f}{b:>9.4f}{b - a:>+11.4f}" if key != "pixels"
                     else f"  {key:<30}{a:>9d}{b:>9d}")  # fmt: skip
    for c_old, c_auto in zip(old.get("classes", []), auto.get("classes", []), strict=True):
        a, b = c_old["iou"], c_auto["iou"]
        if a is None or b is None:
            continue
        label = f"IoU {c_old['name']} ({c_old['support']} px)"
        lines.append(f"  {label:<30}{a:>9.4f}{b:>9.4f}{b - a:>+11.4f}")
    return "\n".join(lines)
