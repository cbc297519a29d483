"""How well the embedded model's VAE holds pictures it never saw: round-trip PSNR and SSIM.

    python benchmarks/bench_vae.py [--model latentwalk/toy/model ...] [--data-dir DIR] [--json FILE]

For each model folder: every held-out photograph and artwork of `latentwalk/toy/pictures.py`
(centred square, 128x128; fetched from the package registries into the cache the first time)
and the drawings made there, encoded (posterior mean) and decoded at 128x128, then the means
over them and over 32 world scenes. Goal (issue 25): held-out PSNR >= 24 dB; the world's own
pictures no worse than before. Several `--model`s print side by side.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", help="diffusers folder (repeatable)")
    parser.add_argument("--data-dir", type=Path, help="download folder of the pictures")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL

    from latentwalk.toy import MODEL_DIR
    from latentwalk.toy.train import evaluate_vae

    torch.set_num_threads(args.threads)
    models = args.model or [MODEL_DIR]
    results = {str(m): evaluate_vae(AutoencoderKL.from_pretrained(m / "vae"), args.data_dir) for m in models}
    names = list(next(iter(results.values())))
    print(f"{'picture':22}" + "".join(f" | {str(m)[-28:]:>28}" for m in models))
    print(f"{'':22}" + " | {:>13} {:>14}".format("PSNR dB", "SSIM") * len(models))
    for name in names:
        print(f"{name:22}" + "".join(f" | {r[name]['psnr']:13.2f} {r[name]['ssim']:14.3f}" for r in results.values()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
