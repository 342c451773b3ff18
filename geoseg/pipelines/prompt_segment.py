"""``geoseg prompt``'s core: windows read, encoded and decoded into objects on the scene grid.

Each window is read alone (box plus context, decimated when the box is larger than
one encoder input) and encoded once for all its prompts, windows batched through the
encoder; the prompts of a batch are decoded :data:`DECODE_PROMPTS` at a time, one
decoder call for consecutive windows holding as many prompts, and the masks go back to
the scene grid (:mod:`geoseg.pipelines.prompt_objects`). The next batch is read
(:func:`~geoseg.pipelines.prompt_windows.read_groups`) and the previous one decoded in
worker threads while a batch is encoded: the encoder is the critical path, and GDAL
and torch release the GIL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from geoseg.models.sam import PAD_LABEL, SamPrompter
from geoseg.pipelines.prompt_inputs import Prompt, Prompts, SceneFrame
from geoseg.pipelines.prompt_objects import ObjectMask, place_mask, stability_score
from geoseg.pipelines.prompt_windows import PromptWindow, plan_windows, read_groups

__all__ = ["DECODE_PROMPTS", "segment"]

#: Prompts decoded together, over the windows of one encoder batch (their S x S logits
#: are held at once).
DECODE_PROMPTS = 8


def segment(
    prompter: SamPrompter, src: Any, bands: Sequence[int], frame: SceneFrame, prompts: Prompts,
    batch: int, keep: str, progress: Callable[[int, int], None] | None = None,
    after_first_read: Callable[[], object] | None = None,
) -> tuple[list[ObjectMask], int]:  # fmt: skip
    """Every prompt's object(s) on the scene grid, and the number of windows encoded.

    Args:
        prompter: the loaded SAM.
        src: the open scene; only the reading thread uses it until this returns.
        bands: 1-based scene bands, in the model's input order.
        frame, prompts: the scene and the prompts on it.
        batch: windows per encoder call.
        keep: ``best`` or ``all`` of SAM's candidate masks.
        progress: ``progress(windows done, windows)`` after each batch.
        after_first_read: run on the reading thread after the first batch of windows
            is read (:func:`~geoseg.pipelines.prompt_windows.read_groups`' ``after_first``).
    """
    plan = plan_windows(prompts.items, prompter.size)
    windows = list(plan)
    groups = [windows[start : start + batch] for start in range(0, len(windows), batch)]
    objects: list[ObjectMask] = []
    decoding: Future[list[ObjectMask]] | None = None
    # Reading (read_groups' thread) and decoding (one more thread) overlap the encoder:
    # batch k + 1 is read and batch k - 1 decoded while batch k is encoded. Both threads
    # stop on any error too, before ``src`` is closed.
    with (
        contextlib.closing(
            read_groups(src, bands, groups, prompter.size, after_first_read)
        ) as reads,
        ThreadPoolExecutor(1, thread_name_prefix="geoseg-decode") as pool,
    ):
        for k, (group, pixels) in enumerate(zip(groups, reads, strict=True)):
            embeddings = prompter.encode(np.stack([p[0] for p in pixels]),
                                         np.stack([p[1] for p in pixels]))  # fmt: skip
            if decoding is not None:  # one batch decoded at a time, in order
                objects += decoding.result()
                _report(progress, k * batch, len(windows))
            decoding = pool.submit(_decode_group, prompter, plan, group, embeddings,
                                   [p[1] for p in pixels], frame, prompts, keep)  # fmt: skip
        if decoding is not None:
            objects += decoding.result()
            _report(progress, len(windows), len(windows))
    return objects, len(windows)


def _report(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _decode_group(
    prompter: SamPrompter, plan: dict[PromptWindow, list[int]], group: Sequence[PromptWindow],
    embeddings: Any, valid: Sequence[np.ndarray], frame: SceneFrame, prompts: Prompts,
    keep: str,
) -> list[ObjectMask]:  # fmt: skip
    """The objects of one encoder batch (``group``'s windows, their ``embeddings`` and
    ``valid`` masks): every prompt of theirs, decoded :data:`DECODE_PROMPTS` at a time in
    one call."""
    pairs = [(j, i) for j, window in enumerate(group) for i in plan[window]]
    objects: list[ObjectMask] = []
    for first in range(0, len(pairs), DECODE_PROMPTS):
        objects += _decode(prompter, embeddings, group, valid, frame, prompts.items,
                           pairs[first : first + DECODE_PROMPTS], keep)  # fmt: skip
    return objects


def _prompt_arrays(
    windows: Sequence[PromptWindow], rows: Sequence[Sequence[Prompt]]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The decoder's ``points (B, P, k, 2)``, ``labels (B, P, k)`` and ``boxes (B, P, 4)``
    (None where the prompts have none) of ``B`` windows' ``P`` prompts, in input px."""
    boxes = None
    if rows[0][0].box is not None:
        boxes = np.stack([
            w.to_input(np.array([m.box for m in row], np.float64).reshape(-1, 2, 2)).reshape(-1, 4)
            for w, row in zip(windows, rows, strict=True)
        ])  # fmt: skip
    k = max(len(m.points) for row in rows for m in row)
    if not k:
        return None, None, boxes
    # point prompts, or boxes with interior points (padded to the most points)
    points = np.zeros((len(rows), len(rows[0]), k, 2), np.float64)
    labels = np.full((len(rows), len(rows[0]), k), PAD_LABEL, np.int64)
    for b, (window, row) in enumerate(zip(windows, rows, strict=True)):
        for p, one in enumerate(row):
            points[b, p, : len(one.points)] = window.to_input(one.points)
            labels[b, p, : len(one.points)] = one.labels
    return points, labels, boxes


def _decode(
    prompter: SamPrompter, embeddings: Any, windows: Sequence[PromptWindow],
    valid: Sequence[np.ndarray], frame: SceneFrame, items: Sequence[Prompt],
    pairs: Sequence[tuple[int, int]], keep: str,
) -> list[ObjectMask]:  # fmt: skip
    """The objects of ``pairs`` ``(j, i)``: prompt ``items[i]`` on encoded window ``j`` of
    ``windows`` (``embeddings[j]``, ``valid[j]``), in ``pairs``' order; one decoder call
    for each run of consecutive windows that hold as many prompts (most hold one)."""
    per: dict[int, list[int]] = {}
    for j, i in pairs:
        per.setdefault(j, []).append(i)
    runs: list[list[int]] = []
    for j in per:
        if runs and len(per[runs[-1][0]]) == len(per[j]):
            runs[-1].append(j)
        else:
            runs.append([j])
    out: list[ObjectMask] = []
    for js in runs:
        rows = [[items[i] for i in per[j]] for j in js]
        points, labels, boxes = _prompt_arrays([windows[j] for j in js], rows)
        decoded = prompter.decode_windows([embeddings[j] for j in js], points, labels, boxes,
                                          keep)  # fmt: skip
        for b, j in enumerate(js):
            for p, i in enumerate(per[j]):
                out += _objects(decoded.logits[b, p], decoded.scores[b, p], valid[j],
                                windows[j], frame, items[i].id, i)  # fmt: skip
    return out


def _objects(
    logits: np.ndarray, scores: np.ndarray, valid: np.ndarray, window: PromptWindow,
    frame: SceneFrame, fid: int, i: int,
) -> list[ObjectMask]:  # fmt: skip
    """Prompt ``i``'s (feature id ``fid``) objects of its ``(M, S, S)`` logits and ``(M,)``
    scores on ``window``: each non-empty candidate, the best flagged."""
    best = int(np.argmax(scores))
    out = []
    for m in range(logits.shape[0]):
        placed = place_mask(logits[m], valid, window, frame.height, frame.width)
        if placed is not None:
            out.append(ObjectMask(fid, i, m, float(scores[m]), stability_score(logits[m]),
                                  *placed, best=m == best))  # fmt: skip
    return out
