"""The onnxruntime runtime of imported ONNX graphs (the ``onnx`` family).

An imported checkpoint is one ``.safetensors`` file holding the ONNX graph's bytes
as a single ``uint8`` tensor (:data:`GRAPH_TENSOR`) and the usual geoseg metadata
(bands, normalization, classes, window); the graph's SHA-256 is in the metadata,
so an edited graph or a swapped tensor is refused on load, as are metadata edits
that no longer fit the graph (band or class counts). ``onnxruntime`` is an optional
dependency (``pip install geoseg[onnx]``), imported when a graph is first opened.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from geoseg.errors import CheckpointError
from geoseg.models.input_norm import BatchNormalizer
from geoseg.models.temperature import temper_probability_array
from geoseg.types import ClassSchema, ModelMeta, bands_count

__all__ = [
    "GRAPH_TENSOR",
    "GraphInfo",
    "OnnxPredictor",
    "graph_digest",
    "inspect_graph",
    "load_onnx_predictor",
    "onnx_reason",
    "onnx_session",
    "read_graph",
]

#: Longest onnxruntime reason quoted in a message, in characters.
_REASON_CHARS = 300
_REASON_BOILERPLATE = "Please fix either the inputs/outputs or the model."
_REASON_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")


def onnx_reason(exc: BaseException) -> str:
    """onnxruntime's error text on one line, without its code prefix and boilerplate.

    ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions ... Please
    fix either the inputs/outputs or the model.`` -> ``Got invalid dimensions ...``;
    a text longer than 300 characters is cut at a word and marked with ``...``.
    """
    text = " ".join(str(exc).split())
    text = _REASON_PREFIX.sub("", text).replace(
        "Please fix either the inputs/outputs or the model.", ""
    )
    text = text.strip() or type(exc).__name__
    if len(text) <= _REASON_CHARS:
        return text
    return text[:_REASON_CHARS].rsplit(" ", 1)[0] + " ..."


#: Name of the tensor that carries the graph's bytes in an imported checkpoint.
GRAPH_TENSOR = "onnx_graph"

_INSTALL = "install the ONNX extra: pip install 'geoseg[onnx]' (onnxruntime)"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(f"ONNX models need onnxruntime; {_INSTALL}") from None
    return onnxruntime


def graph_digest(graph: bytes) -> str:
    """SHA-256 (hex) of a graph's bytes, as stored in the checkpoint's options."""
    return hashlib.sha256(graph).hexdigest()


def _providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``--device`` (CUDA first when present)."""
    available = _onnxruntime().get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device.startswith("cuda") and not cuda:
        raise CheckpointError(
            "--device cuda was asked for but onnxruntime has no CUDA execution provider; "
            "install onnxruntime-gpu, or use --device cpu"
        )
    use_cuda = cuda and (device.startswith("cuda") or device == "auto")
    return ["CUDAExecutionProvider"] * use_cuda + ["CPUExecutionProvider"]


def onnx_session(
    graph: bytes, device: str = "cpu", threads: int | None = None, where: str = "model"
) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``graph``; CheckpointError if it is no ONNX graph.

    Args:
        graph: the serialized ONNX model.
        device: ``auto`` (CUDA provider when present), ``cpu`` or ``cuda``.
        threads: intra-op threads per call (None: onnxruntime's default, every core).
        where: the file named in error messages.
    """
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(graph, options, providers=_providers(device))
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise CheckpointError(
            f"{where}: not a loadable ONNX graph ({onnx_reason(exc)}); export the model with "
            "torch.onnx.export or check the file"
        ) from exc


@dataclass(frozen=True)
class GraphInfo:
    """The first input and the chosen output of an ONNX graph, as onnxruntime reports them.

    Attributes:
        input, output: their names.
        input_type: e.g. ``"tensor(float)"``.
        input_shape: ``(N, C, H, W)``, an int where fixed, None where dynamic.
        output_shape: the output's shape, likewise.
    """

    input: str
    output: str
    input_type: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def inspect_graph(session: Any, output: str | None = None, where: str = "model") -> GraphInfo:
    """The :class:`GraphInfo` of an open session: its first input and its output.

    Args:
        output: the output to use, by name (None: the graph's only output).
        where: the file named in error messages.

    Raises:
        CheckpointError: the graph has more than one input (geoseg feeds one), or
            ``output`` is not one of the graph's outputs, or it is None
            and the graph has several (none is taken silently: the first may be an
            auxiliary head).
    """
    inputs, outs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:  # geoseg feeds one image tensor; a second input would go unfed
        raise CheckpointError(
            f"{where}: the ONNX graph has {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}); geoseg feeds one image tensor "
            "(N, bands, H, W): export the model with the image as its only input (fold "
            "constant extra inputs into the graph)"
        )
    inp = inputs[0]
    names = [o.name for o in outs]
    if output is None and len(outs) > 1:
        raise CheckpointError(
            f"{where}: the ONNX graph has {len(outs)} outputs ({', '.join(names)}); name the "
            f"class map with --output-name (e.g. --output-name {names[0]})"
        )
    if output is not None and output not in names:
        raise CheckpointError(
            f"{where}: the ONNX graph has no output {output!r}; its outputs are "
            f"{', '.join(names)}: pass one of them to --output-name"
        )
    out = outs[0] if output is None else outs[names.index(output)]
    return GraphInfo(inp.name, out.name, inp.type, _dims(inp.shape), _dims(out.shape))


def read_graph(path: str | os.PathLike[str], meta: ModelMeta) -> bytes:
    """The graph bytes of an imported checkpoint, checked against the stored digest.

    Raises:
        CheckpointError: other tensors than the graph, or bytes whose SHA-256 is not
            the one written at import (the file was edited).
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            names = sorted(f.keys())
            raw = f.get_tensor(GRAPH_TENSOR) if names == [GRAPH_TENSOR] else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged tensor data ({exc})") from exc
    if raw is None:
        raise CheckpointError(
            f"{path}: an imported ONNX checkpoint holds one tensor {GRAPH_TENSOR!r}, found "
            f"{names[:5]}; the file was edited or written by another program"
        )
    graph = np.ascontiguousarray(raw, np.uint8).tobytes()
    if graph_digest(graph) != meta.options.get("onnx_sha256"):
        raise CheckpointError(
            f"{path}: the ONNX graph's SHA-256 is not the one recorded at import; the file "
            "was edited or damaged. Import the .onnx file again with `geoseg import`"
        )
    return graph


class OnnxPredictor:
    """An imported ONNX graph behind the :class:`~geoseg.types.Predictor` interface.

    Windows are normalized like a torch model's (``(x * scale - mean) / std``,
    nodata pixels set to 0, the mean), split into the graph's fixed batch size if
    it has one (the last slice padded to it), run through onnxruntime, and turned
    into probabilities (softmax over channels, unless the graph outputs
    probabilities already).

    Args:
        session: the onnxruntime session of the graph.
        meta: the checkpoint's metadata; ``options`` hold ``onnx_input``,
            ``onnx_output``, ``onnx_batch`` (fixed batch size or None) and
            ``onnx_outputs`` (``"logits"`` or ``"probabilities"``).
        scale: digital number -> model units, replacing the checkpoint's (None: keep).
        where: the file named in error messages.
    """

    def __init__(
        self, session: Any, meta: ModelMeta, scale: float | None = None, where: str = "model"
    ) -> None:
        self.session = session
        self.meta = meta
        self.schema: ClassSchema = meta.schema
        self.bands: tuple[str, ...] = meta.bands
        self.where = where
        opts = meta.options
        self._input, self._output = str(opts["onnx_input"]), str(opts["onnx_output"])
        self._batch = opts.get("onnx_batch")
        self._softmax = opts.get("onnx_outputs", "logits") == "logits"
        self._norm = BatchNormalizer.of(meta.normalization, scale)

    def normalize(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` raw values -> normalized float32; nodata pixels -> 0 (the mean)."""
        return self._norm(batch, valid)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The graph's raw ``(N, K, H, W) float32`` output for normalized ``x``.

        A graph of fixed batch size ``B`` gets ``x`` in slices of ``B``; the last
        slice is padded with blank windows (0, the mean) to ``B`` and their outputs
        dropped, so any number of windows runs.
        """
        step = int(self._batch) if self._batch else len(x)
        parts = []
        for k in range(0, len(x), step):
            part = x[k : k + step]
            short = step - len(part)
            if short:
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
            parts.append(self._run_one(part)[: step - short])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if out.ndim != 4 or out.shape[1] != len(self.schema) or out.shape[2:] != x.shape[2:]:
            raise CheckpointError(
                f"{self.where}: the ONNX graph gave {tuple(out.shape)} for {tuple(x.shape)} "
                f"windows, not (N, {len(self.schema)} classes, H, W); the metadata was edited "
                "or the graph does not segment per pixel"
            )
        return np.asarray(out, np.float32)

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        """One ``session.run`` on ``(n, C, H, W)``; its failure as one line that names the
        window only when it is not the one the graph was imported with."""
        try:
            return np.asarray(self.session.run([self._output], {self._input: x})[0])
        except Exception as exc:  # onnxruntime's errors are untyped
            h, w = x.shape[-2:]
            advice = (
                f"predict with the window it was imported with (--window {self.meta.window})"
                if (h, w) != (self.meta.window, self.meta.window)
                else "the graph does not run on the checkpoint's own input; import the .onnx "
                "file again, or check that it runs in onnxruntime on such a batch"
            )
            raise CheckpointError(
                f"{self.where}: the ONNX graph failed on a batch of {x.shape[0]} windows of "
                f"{w} x {h} px ({onnx_reason(exc)}); {advice}"
            ) from exc

    def predict(self, batch: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K, H, W) float32`` of raw windows ``(N, C, H, W)``."""
        out = self.run(self.normalize(batch, valid))
        temperature = self.meta.temperature  # 1 unless calibrated (geoseg calibrate)
        if not self._softmax:
            return temper_probability_array(out, temperature)
        out = out - out.max(axis=1, keepdims=True)
        if temperature != 1.0:
            out /= np.float32(temperature)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out


def load_onnx_predictor(
    path: str | os.PathLike[str],
    meta: ModelMeta,
    device: str = "auto",
    scale: float | None = None,
    threads: int | None = None,
) -> OnnxPredictor:
    """The predictor of an imported checkpoint, its graph checked against the metadata.

    Raises:
        CheckpointError: onnxruntime missing, the graph edited, or bands/classes in
            the metadata that disagree with the graph's fixed input/output shape.
    """
    session = onnx_session(read_graph(path, meta), device, threads, str(path))
    info = inspect_graph(session, str(meta.options["onnx_output"]), str(path))
    channels, classes = info.input_shape[1:2], info.output_shape[1:2]
    if channels and channels[0] not in (None, len(meta.bands)):
        raise CheckpointError(
            f"{path}: the ONNX graph takes {bands_count(channels[0])}, the metadata lists "
            f"{len(meta.bands)}; the file was edited. Import the .onnx file again"
        )
    if classes and classes[0] not in (None, len(meta.schema)):
        raise CheckpointError(
            f"{path}: the ONNX graph outputs {classes[0]} classes, the metadata lists "
            f"{len(meta.schema)} (weights do not fit the classes); import the .onnx file again"
        )
    return OnnxPredictor(session, meta, scale, str(path))
