"""``python -m geoseg.synthetic OUT_DIR [--size HxW] [--seed N] [--overwrite]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from geoseg.errors import GeosegError
from geoseg.synthetic.files import write_sample_data

__all__ = ["main"]


def _parse_size(text: str) -> tuple[int, int]:
    """``"768x1024"`` -> ``(768, 1024)``."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 768x1024, got {text!r}") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geoseg.synthetic OUT_DIR [--size HxW] [--seed N] [--overwrite]``; exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m geoseg.synthetic",
        description="Write a synthetic Sentinel-2-like scene pair, its true land cover and "
        "districts.",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the files into")
    parser.add_argument("--size", type=_parse_size, default=(768, 1024), help="HxW in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        height, width = args.size
        paths = write_sample_data(args.out_dir, height, width, args.seed, args.overwrite)
    except GeosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
