"""Start a model's encoder from a state dict saved elsewhere (timm, torchgeo, SSL4EO, geoseg).

Key names. The encoder is the model's ``encoder`` module (smp; inside the
bottom-up, change and Panoptic-DeepLab wrappers too), Mask R-CNN's
``backbone.body`` or FCN's ``backbone`` (torchvision ResNets). smp's ``tu-``
encoders hold the timm model as ``model.``, and timm's ``features_only`` wrapper
spells a flattened ``stem.0`` as ``stem_0``; both are undone. The file's keys may
sit under a wrapper prefix (``module.encoder_q.`` of a MoCo checkpoint,
``backbone.``, a geoseg checkpoint's ``encoder.``): the prefix under which most
encoder tensors are found is used, preferring one made of known wrapper names
(:data:`KNOWN_WRAPPERS`), so a MoCo query encoder wins over its momentum copy.
Every encoder tensor must then be found with its shape (``num_batches_tracked``
counters may be absent). Tensors of modules the encoder lacks (a classifier head
``fc.*``/``head.*``, deeper stages that a shallow ``encoder_depth`` drops) are
ignored; extra tensors inside a module it has (``layer1.2`` of a ResNet-34 given
to a ResNet-18) mean another architecture. Anything else is one
:class:`~geoseg.errors.EncoderWeightsError` naming what was expected.

First convolution (the encoder's first 4-D weight, ``(out, C, k, k)`` in the file,
``(out, N, k, k)`` for an ``N``-band scene), in this order:

1. the file names its ``C`` bands (a geoseg checkpoint, a safetensors ``bands``
   entry, or ``--encoder-bands``) and holds every scene band: each scene band takes
   the file's channel of the same name (``B2`` = ``B02``), unscaled;
2. ``C == N``: copied as is;
3. ``C == 3`` (RGB): :func:`geoseg.models.runtime.adapt_first_conv`, the rule
   ``geoseg import`` uses too: ``N < 3`` sums the kernels of channels ``c ≡ j
   (mod N)`` into band ``j`` (one band: all three); ``N > 3`` repeats them
   cyclically scaled by ``3 / N`` (timm's ``adapt_input_conv`` and smp's rule), so
   a grey input gives the RGB response;
4. otherwise refused.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geoseg.errors import EncoderWeightsError
from geoseg.io.state_dicts import StateDict
from geoseg.models.runtime import adapt_first_conv as adapt_first_conv_by_count
from geoseg.types import bands_count

__all__ = [
    "ENCODER_NAMES",
    "KNOWN_WRAPPERS",
    "adapt_first_conv",
    "encoder_module",
    "load_encoder_weights",
]

#: Wrapper module names a saved encoder's keys may sit under.
KNOWN_WRAPPERS = frozenset(
    {"module", "model", "backbone", "encoder", "encoder_q", "teacher", "net", "body", "base"}
)

_SHOWN = 3  # keys named in an error


#: Names of the module holding a model's encoder, tried in order: smp's ``encoder``
#: (also inside the bottom-up, change and Panoptic-DeepLab wrappers), Mask R-CNN's
#: ``backbone.body``, torchvision FCN's ``backbone``.
ENCODER_NAMES = ("encoder", "backbone.body", "backbone")


def encoder_module(model: nn.Module) -> tuple[str, nn.Module]:
    """The model's encoder and its name (the first module named as :data:`ENCODER_NAMES` says).

    Raises:
        EncoderWeightsError: the model has none.
    """
    named = dict(model.named_modules())
    for wanted in ENCODER_NAMES:
        found = next((n for n in named if n == wanted or n.endswith("." + wanted)), None)
        if found is not None:
            return found, named[found]
    raise EncoderWeightsError(
        f"--encoder-weights: a {type(model).__name__} has no encoder to start; "
        "use an smp architecture (unet, fpn, ...), fcn or maskrcnn"
    )


def _spellings(key: str) -> tuple[tuple[str, str], ...]:
    """``(how a file spells key, the module path owning it)``; timm's ``stem_0`` is ``stem.0``."""
    head, _, rest = key.partition(".")
    found = [(key, head)]
    flat = re.fullmatch(r"(.+)_(\d+)", head)
    if flat and rest:
        dotted = f"{flat[1]}.{flat[2]}"
        found.append((f"{dotted}.{rest}", dotted))
    return tuple(found)


def _prefix(tensors: Mapping[str, Any], wanted: Mapping[str, tuple[tuple[str, str], ...]],
            path: str) -> str:  # fmt: skip
    """The wrapper prefix under which the file holds the most encoder tensors."""
    counts: Counter[str] = Counter()
    for spellings in wanted.values():
        counts.update(
            {s[: len(s) - len(sp)] for s in tensors for sp, _ in spellings
             if s == sp or s.endswith("." + sp)}
        )  # fmt: skip

    def known(p: str) -> bool:
        return all(part in KNOWN_WRAPPERS for part in p.split(".")[:-1])

    ranked = sorted(counts, key=lambda p: (-counts[p], not known(p), len(p)))
    if not ranked:
        return ""  # nothing matches: the missing-keys error says what was expected
    best = ranked[0]
    rival = next((p for p in ranked[1:] if (counts[p], known(p)) == (counts[best], known(best))),
                 None)  # fmt: skip
    if rival is not None:
        raise EncoderWeightsError(
            f"{path}: holds {counts[best]} encoder tensors under both {best!r} and {rival!r}; "
            "save the one to start from as its own state dict"
        )
    return best


def _match(
    target: Mapping[str, torch.Tensor], inner: str, tensors: Mapping[str, torch.Tensor],
    prefix: str,
) -> tuple[dict[str, str], list[str], list[str]]:  # fmt: skip
    """Encoder key -> file key; encoder keys not found; file keys inside modules it has."""
    pairs: dict[str, str] = {}
    owned: set[str] = set()
    missing = []
    for key in target:
        spelled = next(((prefix + sp, own) for sp, own in _spellings(key[len(inner) :])
                        if prefix + sp in tensors), None)  # fmt: skip
        if spelled is not None:
            pairs[key], _ = spelled
            owned.add(prefix + spelled[1])
        elif not key.endswith("num_batches_tracked"):  # a counter, not a weight
            missing.append(key[len(inner) :])
    used = set(pairs.values())
    extra = [k[len(prefix) :] for k in tensors if k.startswith(prefix) and k not in used
             and any(k.startswith(o + ".") for o in owned)]  # fmt: skip
    return pairs, missing, extra


def _band_key(name: str) -> str:
    """``b2``, ``B2`` and ``B02`` are one band; ``B8A`` = ``B08A``."""
    n = name.strip().upper()
    m = re.fullmatch(r"B0*(\d+)(A?)", n)
    return f"B{int(m[1]):02d}{m[2]}" if m else n


def adapt_first_conv(
    weight: torch.Tensor, scene_bands: Sequence[str], file_bands: Sequence[str] | None
) -> tuple[torch.Tensor, str]:
    """The first convolution for the scene's bands, and the rule used (see module docstring).

    Args:
        weight: ``(out, C, k, k)`` kernels from the file.
        scene_bands: the ``N`` band names the model is trained on.
        file_bands: the file's ``C`` band names, if it gives them.

    Returns:
        ``(out, N, k, k)`` kernels and a one-line description for the provenance.

    Raises:
        EncoderWeightsError: no rule applies.
    """
    c, n = weight.shape[1], len(scene_bands)
    if file_bands is not None and len(file_bands) != c:
        raise EncoderWeightsError(
            f"the weights' first convolution takes {bands_count(c)}, but "
            f"{len(file_bands)} band names were given for it ({', '.join(file_bands)})"
        )
    index = {_band_key(b): i for i, b in enumerate(file_bands or ())}
    picks = [index.get(_band_key(b)) for b in scene_bands]
    if file_bands and all(p is not None for p in picks):
        chosen = [int(p) for p in picks if p is not None]
        return weight[:, chosen].clone(), f"channels {chosen} of {c} picked by band name"
    if c == n:
        return weight.clone(), f"copied ({bands_count(c)}, by position)"
    if c == 3:  # the count rule transformers imports use too
        adapted = adapt_first_conv_by_count(weight, n).to(weight.dtype)
        if n == 1:
            return adapted, "RGB kernels summed into 1 band"
        if n == 2:
            return adapted, "RGB kernels summed by channel mod 2 into 2 bands"
        return adapted, f"RGB kernels repeated cyclically over {n} bands, scaled by 3/{n}"
    lacking = [b for b, p in zip(scene_bands, picks, strict=True) if p is None]
    named = f" ({', '.join(file_bands)}; lacking {', '.join(lacking)})" if file_bands else ""
    raise EncoderWeightsError(
        f"the weights' first convolution takes {bands_count(c)}{named}, the scene {n} "
        f"({', '.join(scene_bands)}); train on the file's bands (--bands), or name the file's "
        "bands with --encoder-bands so the scene's are picked by name"
    )


def _mismatch(
    path: str, encoder: str, target: Mapping[str, torch.Tensor], inner: str, prefix: str,
    missing: list[str], wrong: list[str], extra: list[str],
) -> str:  # fmt: skip
    shown = ", ".join(f"{k[len(inner) :]} {tuple(v.shape)}" for k, v in list(target.items())[:2])
    found = f" (read under prefix {prefix!r})" if prefix else ""
    parts = [
        f"{label} {len(keys)}: {keys[:_SHOWN]}"
        for label, keys in (("missing", missing), ("wrong shape", wrong), ("unexpected", extra))
        if keys
    ]
    return (
        f"{path}: not weights of a {encoder} encoder{found}: {'; '.join(parts)}. A {encoder} "
        f"encoder has {len(target)} tensors ({shown}, ...); pass --encoder with the "
        "architecture the weights were saved from"
    )


def _only_inputs_differ(value: torch.Tensor, want: torch.Tensor) -> bool:
    """Two conv kernels ``(out, in, kh, kw)`` alike but for their input channels."""
    return value.ndim == want.ndim == 4 and all(value.shape[d] == want.shape[d] for d in (0, 2, 3))


def load_encoder_weights(
    model: nn.Module, weights: StateDict, encoder: str, scene_bands: Sequence[str],
    file_bands: Sequence[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Copy a state dict into ``model``'s encoder (in place), adapting its first convolution.

    Args:
        model: a freshly built model (see :func:`encoder_module`).
        weights: the file read by :func:`geoseg.io.state_dicts.read_state_dict`.
        encoder: the ``--encoder`` name, for messages.
        scene_bands: the bands the model is trained on.
        file_bands: the file's input band names (default: what the file says).

    Returns:
        Provenance: file name, sha256, format, prefix, tensors loaded, first-conv rule.

    Raises:
        EncoderWeightsError: the weights do not fit (one message naming what was expected).
    """
    name, module = encoder_module(model)
    target = module.state_dict()
    inner = "model." if all(k.startswith("model.") for k in target) else ""
    path = str(weights.path)
    wanted = {k: _spellings(k[len(inner) :]) for k in target}
    prefix = _prefix(weights.tensors, wanted, path)
    pairs, missing, extra = _match(target, inner, weights.tensors, prefix)
    first = next((k for k, v in target.items() if v.ndim == 4), None)
    state, wrong, rule, band_error = dict(target), [], "none", None
    for key, src in pairs.items():
        value, want = weights.tensors[src], target[key]
        if key == first and _only_inputs_differ(value, want):
            try:
                value, rule = adapt_first_conv(value, scene_bands, file_bands or weights.bands)
            except EncoderWeightsError as exc:  # reported unless the keys are wrong too
                band_error = EncoderWeightsError(f"{path}: {exc}")
                continue
        if value.shape != want.shape:
            wrong.append(f"{key[len(inner) :]} {tuple(value.shape)} != {tuple(want.shape)}")
        state[key] = value.to(want.dtype)
    if missing or wrong or extra:
        raise EncoderWeightsError(
            _mismatch(path, encoder, target, inner, prefix, missing, wrong, extra)
        )
    if band_error is not None:
        raise band_error
    module.load_state_dict(state, strict=True)
    return {
        "file": weights.path.name, "sha256": weights.sha256, "format": weights.kind,
        "prefix": prefix, "module": name, "tensors": len(pairs), "first_conv": rule,
    }  # fmt: skip
