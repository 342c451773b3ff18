"""Training throughput on CPU (or GPU): windows/s and the share of step time spent on data.

    python benchmarks/bench_train.py [--steps 30] [--batch-size 16] [--window 64] [--device auto]

Trains the default small U-Net (timm ResNet-18 encoder, depth 3) on a generated
6-band scene and prints windows/s and the fraction of the time spent sampling and
augmenting windows (target < 10 %), both measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from geoseg.synthetic import TRUTH_SCHEMA, write_sample_data
from geoseg.training import load_train_config, train_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sample_data(Path(tmp), height=512, width=512)
        cfg = load_train_config(
            None, images=[str(paths["before"])], labels=[str(paths["truth_before"])],
            classes=TRUTH_SCHEMA.to_json(), output=str(Path(tmp) / "m.safetensors"),
            arch="unet", encoder="tu-resnet18",
            options={"encoder_depth": 3, "decoder_channels": [64, 32, 16]},
            window=args.window, epochs=2, steps_per_epoch=args.steps,
            batch_size=args.batch_size, device=args.device,
        )  # fmt: skip
        history = train_model(cfg).history
    last = history[-1]  # the first epoch includes warm-up
    total = last.data_s + last.step_s
    share = last.data_s / total
    print(f"device {args.device}, batch {args.batch_size}, window {args.window} px")
    print(f"windows/s          {last.windows / total:8.1f}")
    print(f"data time share    {share:8.3f}   (target < 0.10)")
    print(f"step time          {last.step_s / args.steps * 1000:8.1f} ms/step")
    return 1 if args.check and share >= 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
