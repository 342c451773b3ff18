"""``geoseg import``: a model from elsewhere -> a self-describing geoseg checkpoint.

The kind of source is told by :func:`source_kind` (an ONNX file, or a Hugging Face
transformers model folder: :mod:`geoseg.pipelines.hf_import`, a SAM one among them:
:mod:`geoseg.pipelines.sam_import`, which also reads SAM's own ``.pth`` files:
:mod:`geoseg.pipelines.sam_pth`); each kind has one
importer in :data:`IMPORTERS` that checks the model against the options and
returns the tensors and metadata to write. Everything is checked before the
output is written (atomically), so a refused import leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import __version__
from geoseg.errors import BandMismatchError, CheckpointError, GeosegError, InputNotFoundError
from geoseg.io.atomic import check_output_path
from geoseg.io.checkpoint import save_checkpoint
from geoseg.models.onnx_runtime import onnx_reason
from geoseg.types import ClassSchema, ModelMeta, Normalization, TileSpec, bands_count

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMPORTERS",
    "ImportOptions",
    "ImportResult",
    "import_model",
    "preprocessor_normalization",
    "source_kind",
]


@dataclass(frozen=True)
class ImportOptions:
    """What ``geoseg import`` is told about a model (its file cannot say it).

    Attributes:
        bands: the scene bands the model takes, in its input order (e.g. ``B02,B03,...``).
        schema: its classes; output channel ``k`` is ``schema.classes[k]`` (None:
            transformers' ``id2label``; an ONNX graph needs them).
        window: window side in px it runs on (None: a fixed-size ONNX graph's own or
            the preprocessor's size, else 256).
        margin: px trimmed from each window side when tiling (None: ``window // 8``).
        mean, std: per-band normalization in model units (after ``scale``); None: the
            preprocessor's (transformers), else 0 and 1.
        scale: how the data the model was made for stores its values: model units =
            stored value / ``scale`` (10000 for Sentinel-2 reflectance x 10000; None:
            the preprocessor's, else 1).
        gsd_m: ground sample distance the model was trained at, in metres (documentation).
        outputs: ONNX: ``"logits"`` (softmax applied) or ``"probabilities"``.
        output_name: ONNX: the graph output that is the class map (None: its only
            output; a graph with several is refused without one).
        overwrite: replace an existing output.
        task: checkpoint task: ``semantic``; transformers Mask2Former / MaskFormer
            also ``instance`` or ``panoptic``.
        things: object classes (names or ids) of an ``instance``/``panoptic`` import
            (None: the class file's ``is_thing``).
        score_threshold: smallest object score kept (``instance``/``panoptic``).
        sam_config: a SAM ``.pth``'s model: ``vit_b``, ``vit_l``, ``vit_h`` or the path of a
            transformers ``SamConfig`` JSON file; a SAM 2 ``.pt``'s: ``hiera_t``,
            ``hiera_s``, ``hiera_b+``, ``hiera_l`` or a ``Sam2VideoConfig`` JSON file
            (None: told from the tensor shapes).
    """

    bands: Sequence[str]
    schema: ClassSchema | None = None
    window: int | None = None
    margin: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    scale: float | None = None
    gsd_m: float | None = None
    outputs: str = "logits"
    output_name: str | None = None
    overwrite: bool = False
    task: str = "semantic"
    things: Sequence[str] | None = None
    score_threshold: float = 0.5
    sam_config: str | None = None

    def __post_init__(self) -> None:
        # Checked here, before any model is read: a NaN mean or a zero std makes every
        # window NaN and the map one class; a negative GSD reads as nonsense in `models`.
        repeated = sorted({b for b in self.bands if list(self.bands).count(b) > 1})
        if repeated:
            raise GeosegError(
                f"--bands names {', '.join(repeated)} more than once; name each scene band once"
            )
        for option, values in (("--mean", self.mean), ("--std", self.std)):
            bad = [v for v in values or () if not math.isfinite(v)]
            if bad:
                raise GeosegError(f"{option} {bad[0]} is not a finite number; give finite values")
        if any(v <= 0 for v in self.std or ()):
            raise GeosegError(f"--std values must be > 0 (inputs are divided by them), got "
                              f"{','.join(f'{v:g}' for v in self.std or ())}")  # fmt: skip
        if self.scale is not None and not (math.isfinite(self.scale) and self.scale > 0):
            raise GeosegError(
                f"--scale must be a finite number > 0 (model input = stored value / scale), "
                f"not {self.scale}"
            )
        if self.gsd_m is not None and not (math.isfinite(self.gsd_m) and self.gsd_m > 0):
            raise GeosegError(f"--gsd must be a finite number of metres > 0, not {self.gsd_m}")


@dataclass(frozen=True)
class ImportResult:
    """The checkpoint :func:`import_model` wrote, the kind of source and its metadata."""

    output: Path
    kind: str
    meta: ModelMeta


Importer = Callable[[Path, ImportOptions], tuple[dict[str, "torch.Tensor"], ModelMeta]]


def source_kind(source: Path) -> str:
    """The kind of model ``source`` is: a key of :data:`IMPORTERS`.

    Raises:
        InputNotFoundError: no such file or folder.
        GeosegError: a source geoseg cannot import; the message lists what it can.
    """
    if not source.exists():
        raise InputNotFoundError(f"{source}: no such model file or folder; check the path")
    if source.is_dir():
        return _folder_kind(source)
    if source.suffix.lower() == ".onnx":
        return "onnx"
    if source.suffix.lower() in (".pth", ".pt"):  # segment-anything's own checkpoints
        return "sam"
    raise GeosegError(
        f"{source}: geoseg import reads ONNX graphs (.onnx files), transformers model "
        "folders (config.json + model.safetensors) and SAM's .pth checkpoints; export the "
        "model to one of them first"
    )


def _folder_kind(folder: Path) -> str:
    """``sam`` for a folder whose ``config.json`` says ``model_type`` ``sam``, ``sam2`` or
    ``sam2_video``, else ``transformers`` (whose importer gives the clear error for a
    folder that is not a model)."""
    from geoseg.models.families.sam import MODEL_TYPE as SAM
    from geoseg.models.families.sam2 import MODEL_TYPES as SAM2

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # the transformers importer says what is wrong
        return "transformers"
    return (
        "sam"
        if isinstance(config, dict) and config.get("model_type") in (SAM, *SAM2)
        else "transformers"
    )


def import_model(
    source: str | os.PathLike[str], output: str | os.PathLike[str], options: ImportOptions
) -> ImportResult:
    """Check ``source`` against ``options`` and write it as a geoseg checkpoint.

    Raises:
        GeosegError: a missing or unreadable source, options that disagree with the
            model (bands, window, classes), or an existing output (nothing is written).
    """
    src, out = Path(source), Path(output)
    if out.suffix.lower() != ".safetensors":
        raise GeosegError(
            f"{out}: a geoseg checkpoint is a .safetensors file; name the output "
            f"{out.with_suffix('.safetensors').name}"
        )
    check_output_path(out, options.overwrite, [src])
    kind = source_kind(src)
    if options.sam_config is not None and not (kind == "sam" and src.is_file()):
        raise GeosegError(
            f"{src}: --sam-config applies to SAM .pth checkpoints (a folder's config.json says "
            "its model); leave it out"
        )
    if options.output_name is not None and kind != "onnx":
        raise GeosegError(
            f"{src}: --output-name picks an ONNX graph's output; a {kind} model has one, "
            "leave it out"
        )
    tensors, meta = IMPORTERS[kind](src, options)
    save_checkpoint(out, tensors, meta, overwrite=options.overwrite)
    return ImportResult(out, kind, meta)


def preprocessor_normalization(
    prep: Mapping[str, Any], opts: ImportOptions, n: int
) -> Normalization:
    """``--mean/--std/--scale``, else the preprocessor's values repeated over the ``n`` bands.

    ``prep`` is a transformers ``preprocessor_config.json`` (``image_mean``, ``image_std``,
    ``rescale_factor``, ``do_rescale``, ``do_normalize``); ``{}`` (a model without one)
    gives mean 0, std 1 and scale 1 for what the options leave out.

    Raises:
        GeosegError: ``--mean``/``--std`` with other than ``n`` values.
    """
    rescale = prep.get("do_rescale", True) and bool(prep)
    scale = 1.0 / opts.scale if opts.scale is not None else (
        float(prep.get("rescale_factor", 1 / 255)) if rescale else 1.0
    )  # fmt: skip
    if not scale > 0:
        raise GeosegError(
            f"--scale must be > 0 (model input = stored value / scale), not {opts.scale}"
        )
    normalize = prep.get("do_normalize", True) and bool(prep)
    values = []
    for given, key, default in ((opts.mean, "image_mean", 0.0), (opts.std, "image_std", 1.0)):
        if given is not None:
            values.append(tuple(float(v) for v in given))
            continue
        own = prep.get(key) if normalize else None
        own = own if isinstance(own, list) and own else [default]
        values.append(tuple(float(own[j % len(own)]) for j in range(n)))
    mean, std = values
    if len(mean) != n or len(std) != n:
        raise GeosegError(
            f"--mean has {len(mean)} and --std {len(std)} values for {n} --bands; give one "
            "value per band"
        )
    return Normalization(mean, std, scale=scale)


def _check_input(
    where: Path, shape: Sequence[int | None], kind: str, opts: ImportOptions, window: int
) -> None:
    """The graph's input fits the options: 4-D float, ``len(bands)`` channels, the window."""
    if len(shape) != 4 or kind != "tensor(float)":
        raise CheckpointError(
            f"{where}: the ONNX input is {kind} of rank {len(shape)}; geoseg runs graphs on "
            "float32 (N, bands, H, W) windows"
        )
    if shape[1] is not None and shape[1] != len(opts.bands):
        raise BandMismatchError(
            f"{where}: the ONNX input takes {bands_count(shape[1])}, --bands lists "
            f"{len(opts.bands)} ({','.join(opts.bands)}); name one scene band per input channel"
        )
    fixed = [d for d in shape[2:] if d is not None]
    if fixed and (len(fixed) < 2 or fixed[0] != fixed[1] or fixed[0] != window):
        raise CheckpointError(
            f"{where}: the ONNX input has a fixed size {shape[2]} x {shape[3]} px, not the "
            f"--window {window}; import it with --window {fixed[0]} (square windows only)"
        )


def _dry_run(
    where: Path,
    session: Any,
    info: Any,
    bands: int,
    schema: ClassSchema,
    window: int,
    outputs: str = "logits",
) -> None:
    """Run one blank window: the graph must give ``len(classes)`` maps of the window's size,
    and probabilities exactly when ``outputs`` says so (:func:`_check_outputs`)."""
    batch = info.input_shape[0] or 1
    x = np.zeros((batch, bands, window, window), np.float32)
    try:
        y = session.run([info.output], {info.input: x})[0]
    except Exception as exc:  # onnxruntime's errors are untyped
        raise CheckpointError(
            f"{where}: the ONNX graph fails on {window} x {window} px windows "
            f"({onnx_reason(exc)}); check --window"
        ) from exc
    expected = (batch, len(schema), window, window)
    if tuple(y.shape) != expected and y.ndim == 4 and y.shape[2:] == expected[2:]:
        raise CheckpointError(
            f"{where}: the ONNX graph outputs {y.shape[1]} classes, the class file lists "
            f"{len(schema)} ({', '.join(schema.names)}); give one class per output"
        )
    if tuple(y.shape) != expected:
        raise CheckpointError(
            f"{where}: the ONNX graph outputs {tuple(y.shape)} for {tuple(x.shape)}, not one "
            "map per class at the window's size; geoseg imports per-pixel segmentation graphs"
        )
    _check_outputs(where, np.asarray(y, np.float64), outputs)


def _check_outputs(where: Path, y: np.ndarray, outputs: str) -> None:
    """Refuse ``--outputs`` that contradicts what the graph gives on a blank window.

    Probabilities are in [0, 1] and sum to 1 over the classes (axis 1) at every pixel;
    logits of a whole window doing both by chance are not to be expected. Softmaxing
    probabilities again, or taking logits as probabilities, keeps the classes but
    makes ``--confidence`` wrong, so either mix-up is refused.
    """
    sums = y.sum(axis=1)
    probabilities = bool(y.min() >= -1e-4 and y.max() <= 1 + 1e-4 and np.abs(sums - 1).max() < 1e-3)
    if outputs == "probabilities" and not probabilities:
        raise CheckpointError(
            f"{where}: --outputs probabilities, but on a blank window the graph gives values "
            f"from {y.min():.3g} to {y.max():.3g} whose class sums run from {sums.min():.3g} "
            f"to {sums.max():.3g}, not probabilities; leave --outputs at logits"
        )
    if outputs == "logits" and probabilities and y.shape[1] > 1:
        raise CheckpointError(
            f"{where}: the graph already gives probabilities (in [0, 1], summing to 1 over "
            "the classes); pass --outputs probabilities so they are not softmaxed again"
        )


def import_onnx(source: Path, opts: ImportOptions) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """The graph tensor and metadata of an ONNX file, checked against ``opts``."""
    import torch

    from geoseg.models.onnx_runtime import GRAPH_TENSOR, graph_digest, inspect_graph, onnx_session

    if not opts.bands:
        raise GeosegError("--bands is empty; name the scene band of each input channel")
    if opts.task != "semantic" or opts.things is not None:
        raise GeosegError(
            f"{source}: ONNX graphs import as per-pixel (--task semantic) models; --task "
            "instance/panoptic and --things apply to transformers Mask2Former / MaskFormer"
        )
    if opts.schema is None:
        raise GeosegError(
            f"{source}: an ONNX graph does not name its classes; give --classes classes.yaml "
            "with one {id, name, colour} per output channel"
        )
    schema = opts.schema
    if opts.outputs not in ("logits", "probabilities"):
        raise GeosegError(f"outputs must be logits or probabilities, not {opts.outputs!r}")
    norm = preprocessor_normalization({}, opts, len(opts.bands))
    graph = source.read_bytes()
    session = onnx_session(graph, "cpu", None, str(source))
    info = inspect_graph(session, opts.output_name, str(source))
    fixed = info.input_shape[2] if len(info.input_shape) == 4 else None
    window = opts.window or fixed or 256
    margin = window // 8 if opts.margin is None else opts.margin
    TileSpec(window, margin)  # refuses a window < 8 px or a margin > window / 4
    _check_input(source, info.input_shape, info.input_type, opts, window)
    _dry_run(source, session, info, len(opts.bands), schema, window, opts.outputs)
    options: Mapping[str, Any] = {
        "onnx_sha256": graph_digest(graph), "onnx_input": info.input,
        "onnx_output": info.output, "onnx_batch": info.input_shape[0],
        "onnx_fixed_window": window if fixed is not None else None,
        "onnx_outputs": opts.outputs,
    }  # fmt: skip
    meta = ModelMeta(
        task="semantic", arch="onnx", encoder=None, bands=tuple(opts.bands), normalization=norm,
        schema=schema, window=window, margin=margin, gsd_m=opts.gsd_m,
        provenance={"imported_from": source.name, "format": "onnx",
                    "imported_by": f"geoseg {__version__}"},
        options=options,
    )  # fmt: skip
    tensor = torch.from_numpy(np.frombuffer(graph, np.uint8).copy())
    return {GRAPH_TENSOR: tensor}, meta


def import_transformers(
    source: Path, opts: ImportOptions
) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """A transformers model folder (:func:`geoseg.pipelines.hf_import.import_hf_folder`)."""
    from geoseg.pipelines.hf_import import import_hf_folder

    if opts.outputs != "logits":
        raise GeosegError("--outputs applies to ONNX graphs; transformers models give logits")
    return import_hf_folder(source, opts)


def import_sam(source: Path, opts: ImportOptions) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """A transformers SAM / SAM 2 folder (see :mod:`geoseg.pipelines.sam_import`) or an
    original segment-anything ``.pth`` (:mod:`geoseg.pipelines.sam_pth`)."""
    from geoseg.pipelines.sam_import import import_sam_folder
    from geoseg.pipelines.sam_pth import import_sam_pth

    return import_sam_folder(source, opts) if source.is_dir() else import_sam_pth(source, opts)


#: Source kind (:func:`source_kind`) -> its importer.
IMPORTERS: dict[str, Importer] = {
    "onnx": import_onnx, "transformers": import_transformers, "sam": import_sam,
}  # fmt: skip
