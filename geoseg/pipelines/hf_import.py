"""``geoseg import FOLDER``: a Hugging Face ``transformers`` model folder -> a geoseg checkpoint.

The folder is what ``save_pretrained`` writes: ``config.json`` and
``model.safetensors`` (optionally ``preprocessor_config.json``). It is read with
``local_files_only`` (nothing is ever downloaded) and only from safetensors:
pickled ``pytorch_model.bin`` weights are refused. The model's config travels in
the checkpoint's metadata and its weights as the checkpoint's tensors; when the
scene has another band count than the model, the first convolution is adapted
(:func:`geoseg.models.hf.adapt_first_conv`). Everything is checked, including one
forward pass of the rebuilt model, before the output is written (atomically).

Mask2Former / MaskFormer / OneFormer import as ``semantic`` (default), ``instance``
or ``panoptic`` checkpoints (OneFormer's task-token ids, tokenized here with the
folder's CLIP tokenizer, travel in ``ModelMeta.options["task_inputs"]``); for the
object tasks the class schema says which classes are things (``is_thing`` in
classes.yaml, or ``--things``), and the post-processing thresholds travel in
``ModelMeta.options`` (:data:`geoseg.models.hf_masks.POSTPROCESS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from geoseg import __version__
from geoseg.errors import CheckpointError, GeosegError, InputNotFoundError
from geoseg.io.json_text import parse_json
from geoseg.models.families.transformers import FAMILY as TRANSFORMERS
from geoseg.models.family import TASKS
from geoseg.models.hf import (
    adapt_first_conv,
    build_hf,
    check_task,
    first_conv,
    hf_classes,
    hf_config,
    transformers_module,
    with_channels,
    wrap_hf,
)
from geoseg.models.runtime import check_state_fits
from geoseg.pipelines.importing import preprocessor_normalization  # imports us lazily: no cycle
from geoseg.types import ClassInfo, ClassSchema, ModelMeta, TileSpec

if TYPE_CHECKING:
    from geoseg.pipelines.importing import ImportOptions

log = logging.getLogger(__name__)

__all__ = [
    "check_weights_file",
    "import_hf_folder",
    "load_folder_model",
    "preprocessor_normalization",
    "quiet_transformers",
    "read_folder_json",
]

#: Window sides of transformers models must be a multiple of this: the family record's.
WINDOW_MULTIPLE = TRANSFORMERS.window_multiple("", {})
_CONVERT = (
    'python -c "import torch; from safetensors.torch import save_file; save_file(torch.load('
    "'pytorch_model.bin', weights_only=True), 'model.safetensors')\""
)


def import_hf_folder(
    source: Path, opts: ImportOptions
) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """The tensors and metadata of a transformers model folder, checked against ``opts``."""
    if not source.is_dir():
        raise InputNotFoundError(
            f"{source}: not a folder; geoseg imports a transformers model folder as "
            "save_pretrained writes it (config.json + model.safetensors)"
        )
    config = read_folder_json(source / "config.json", required=True)
    # an unsupported model_type is refused before any weights are read
    hf_classes(config, str(source / "config.json"))
    check_weights_file(source)
    prep = read_folder_json(source / "preprocessor_config.json", required=False)
    bands = tuple(opts.bands)
    if not bands:
        raise GeosegError("--bands is empty; name the scene band of each model input channel")
    check_task(config, opts.task)
    schema = _things(_schema(source, config, opts.schema), opts)
    tokens = _task_inputs(source, config, opts.task)
    model = _load_pretrained(source, config)
    layer, conv = first_conv(model)
    state = {k: v.detach().clone() for k, v in wrap_hf(model, config).state_dict().items()}
    state[f"model.{layer}.weight"] = adapt_first_conv(conv.weight, len(bands))
    window = _window(opts.window, prep)
    margin = window // 8 if opts.margin is None else opts.margin
    TileSpec(window, margin)  # refuses a window < 8 px or a margin > window / 4
    meta = ModelMeta(
        task=opts.task, arch=f"hf-{config['model_type']}", encoder=type(model).__name__,
        bands=bands, normalization=preprocessor_normalization(prep, opts, len(bands)),
        schema=schema, window=window, margin=margin, gsd_m=opts.gsd_m,
        provenance={"imported_from": source.name, "format": "transformers",
                    "imported_by": f"geoseg {__version__}",
                    "first_conv": {"layer": layer, "pretrained_channels": conv.in_channels,
                                   "bands": len(bands)}},
        options={"hf_config": with_channels(config, len(bands)), **_postprocess(opts), **tokens},
    )  # fmt: skip
    _dry_run(source, meta, state)
    return state, meta


def _task_inputs(source: Path, config: Mapping[str, Any], task: str) -> dict[str, list[int]]:
    """OneFormer's task-token ids for ``task`` as ``{"task_inputs": ids}`` ({} for others).

    As ``OneFormerProcessor`` builds them: "the task is <task>" through the folder's
    CLIP tokenizer, padded to ``task_seq_len`` and zeroed where the attention mask is.
    """
    if config.get("model_type") != "oneformer":
        return {}
    files = ("tokenizer.json",) if (source / "tokenizer.json").is_file() else (
        "vocab.json", "merges.txt"
    )  # fmt: skip
    if not all((source / name).is_file() for name in files):
        raise InputNotFoundError(
            f"{source}: OneFormer needs its CLIP tokenizer for the task input, and the folder "
            "has no tokenizer.json (or vocab.json + merges.txt); save the OneFormerProcessor "
            "into it too (processor.save_pretrained(folder))"
        )
    transformers = transformers_module()
    length = int(config.get("task_seq_len", 77))
    try:
        with quiet_transformers(transformers):
            tokenizer = transformers.CLIPTokenizer.from_pretrained(
                str(source), local_files_only=True
            )
            tokens = tokenizer(
                [f"the task is {task}"], padding="max_length", max_length=length, truncation=True
            )
    except Exception as exc:  # tokenizer loading errors are untyped
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source}: the CLIP tokenizer cannot be loaded ({first}); save the "
            "OneFormerProcessor into the folder with save_pretrained"
        ) from exc
    ids, mask = tokens["input_ids"][0], tokens["attention_mask"][0]
    return {"task_inputs": [int(i) * int(m) for i, m in zip(ids, mask, strict=True)]}


def read_folder_json(path: Path, required: bool) -> dict[str, Any]:
    """The JSON object in ``path`` of a model folder ({} if absent and not ``required``)."""
    if not path.is_file():
        if required:
            raise InputNotFoundError(
                f"{path}: missing; import a transformers model folder as save_pretrained "
                "writes it (config.json + model.safetensors)"
            )
        return {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from exc
    data = parse_json(
        raw, path, "JSON file", CheckpointError, "re-save the model folder with save_pretrained"
    )
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def check_weights_file(source: Path) -> None:
    """``model.safetensors`` (or its shard index) is there; pickles are refused."""
    if any((source / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        return
    pickled = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")
               if (source / n).is_file()]  # fmt: skip
    if pickled:
        raise CheckpointError(
            f"{source / pickled[0]}: pickled weights; geoseg never unpickles model files. "
            f"Convert them once in {source} with {_CONVERT}, then import again"
        )
    raise InputNotFoundError(
        f"{source}: no model.safetensors beside config.json; save the model with "
        "save_pretrained(folder) (safetensors is its default)"
    )


def _load_pretrained(source: Path, config: Mapping[str, Any]) -> torch.nn.Module:
    """The folder's model, float32, loaded offline; missing or misfit weights are refused."""
    model_cls = getattr(transformers_module(), hf_classes(config).model)
    return load_folder_model(source, model_cls, hf_config(config))


def load_folder_model(source: Path, model_cls: Any, config: Any) -> torch.nn.Module:
    """``model_cls.from_pretrained(source)`` (its ``config`` object), float32, offline, from
    safetensors only, in eval mode; weights missing or of the wrong shape are refused."""
    transformers = transformers_module()
    try:
        with quiet_transformers(transformers):
            model, info = model_cls.from_pretrained(
                str(source), config=config, local_files_only=True,
                use_safetensors=True, output_loading_info=True, dtype=torch.float32,
                ignore_mismatched_sizes=True,  # reported below, with the shapes
            )  # fmt: skip
    except Exception as exc:  # transformers' loading errors are untyped
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source}: transformers cannot load the model ({first}); save config and weights "
            "together with save_pretrained"
        ) from exc
    missing = sorted(info.get("missing_keys", ()))
    wrong = sorted(info.get("mismatched_keys", ()), key=lambda m: str(m[0]))
    if missing or wrong:
        said = [f"{name} {tuple(stored)} stored, {tuple(wanted)} for config.json"
                for name, stored, wanted, *_ in wrong[:3]]  # fmt: skip
        said += [f"missing {name}" for name in missing[: max(0, 3 - len(said))]]
        hint = (" (a class count edited in config.json's id2label changes the head's shape)"
                if wrong else "")  # fmt: skip
        raise CheckpointError(
            f"{source}: model.safetensors does not fit config.json ({'; '.join(said)}); save "
            f"config and weights together with save_pretrained{hint}"
        )
    return model.eval()


@contextlib.contextmanager
def quiet_transformers(transformers: Any) -> Iterator[None]:
    """No progress bars or load reports from transformers (the CLI prints its own lines)."""
    log = transformers.utils.logging
    bars, level = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()
    log.set_verbosity_error()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


#: transformers' ``num_labels`` when a config names none (``PretrainedConfig``'s default).
DEFAULT_LABELS = 2


def _schema(source: Path, config: Mapping[str, Any], given: ClassSchema | None) -> ClassSchema:
    """``given`` if it has one class per model output, else the config's ``id2label``."""
    labels = config.get("id2label") or {}
    # transformers leaves id2label out of config.json at its default: 2 labels
    count = len(labels) if labels else int(config.get("num_labels", DEFAULT_LABELS))
    if given is not None:
        if len(given) != count:
            raise CheckpointError(
                f"{source / 'config.json'}: the model outputs {count} classes, the class file "
                f"lists {len(given)} ({', '.join(given.names)}); give one class per output"
            )
        return given
    if not 0 < count <= 255:
        raise CheckpointError(
            f"{source / 'config.json'}: {count} classes; geoseg label maps hold 1 to 255"
        )
    names = [str(labels.get(str(k), labels.get(k, f"class_{k}"))) for k in range(count)]
    if not labels:
        log.warning(
            "%s: names no classes (no id2label); its %d outputs are imported as %s: give "
            "--classes classes.yaml (one entry per output: id, name, colour) to name them",
            source / "config.json", count, ", ".join(names),
        )  # fmt: skip
    return ClassSchema(tuple(ClassInfo(k, n, _colour(k)) for k, n in enumerate(names)))


def _things(schema: ClassSchema, opts: ImportOptions) -> ClassSchema:
    """``schema`` with ``is_thing`` set from ``opts.things``; object tasks need one thing."""
    objects = TASKS[opts.task].objects
    if opts.things is not None:
        if not objects:
            raise GeosegError("--things applies to --task instance or panoptic")
        wanted = {t.strip().lower() for t in opts.things if t.strip()}
        known = {c.name.lower() for c in schema.classes} | {str(c.id) for c in schema.classes}
        if wanted - known:
            raise GeosegError(
                f"--things {', '.join(sorted(wanted - known))}: not a class of the model; "
                f"its classes are {', '.join(schema.names)}"
            )
        schema = ClassSchema(tuple(
            dataclasses.replace(c, is_thing=c.name.lower() in wanted or str(c.id) in wanted)
            for c in schema.classes
        ))  # fmt: skip
    if objects and not any(c.is_thing for c in schema.classes):
        raise GeosegError(
            f"--task {opts.task} needs object classes: name them with --things (e.g. "
            f"--things {schema.names[-1]}) or mark them is_thing: true in --classes"
        )
    return schema


def _postprocess(opts: ImportOptions) -> dict[str, float]:
    """The object post-processing values stored in the checkpoint's options."""
    if not TASKS[opts.task].objects:
        return {}
    if not 0 <= opts.score_threshold < 1:
        raise GeosegError(f"--score-threshold must be in [0, 1), not {opts.score_threshold}")
    from geoseg.models.hf_masks import POSTPROCESS

    return {**POSTPROCESS, "score_threshold": float(opts.score_threshold)}


def _colour(k: int) -> tuple[int, int, int]:
    """A distinct, fixed colour for class ``k`` (for classes that came without one)."""
    return ((67 * k + 40) % 256, (151 * k + 120) % 256, (211 * k + 200) % 256)


def _window(window: int | None, prep: Mapping[str, Any]) -> int:
    size = prep.get("size")
    size = size if isinstance(size, dict) else {}
    side = size.get("height") if size.get("height") == size.get("width") else None
    chosen = window or (side if isinstance(side, int) and side % WINDOW_MULTIPLE == 0 else 256)
    if chosen % WINDOW_MULTIPLE:
        raise GeosegError(
            f"--window {chosen}: transformers models need windows that are a multiple of "
            f"{WINDOW_MULTIPLE} px"
        )
    return int(chosen)


def _dry_run(source: Path, meta: ModelMeta, state: dict[str, torch.Tensor]) -> None:
    """Rebuild the model as ``geoseg predict`` will and run one blank window through it."""
    module = build_hf(meta)
    check_state_fits(source, module, state, meta)
    module.load_state_dict(state, strict=True)
    side = min(meta.window, 2 * WINDOW_MULTIPLE)
    with torch.inference_mode():
        y = module.eval()(torch.zeros(1, len(meta.bands), side, side))
    if isinstance(y, tuple):  # mask queries: (1, Q, K + 1) probabilities, (1, Q, side, side)
        probs, masks = y
        if probs.shape[-1] == len(meta.schema) + 1 and tuple(masks.shape[-2:]) == (side, side):
            return
        y = probs[..., :-1]
    if tuple(y.shape) != (1, len(meta.schema), side, side):
        raise CheckpointError(
            f"{source}: the model gives {tuple(y.shape)} for a {side} px window, not one map "
            f"per class ({len(meta.schema)})"
        )
