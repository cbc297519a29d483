"""Benchmark lossless codecs for stored frames (latentwalk/store.py): bytes per frame, encode and decode time.

Not a test: it prints a table (and writes JSON with --json). Frames are (H, W, 3) uint8 at each
--sizes side, of two kinds:

  photo      real photographs that ship with installed packages (scikit-learn's china.jpg and
             flower.jpg, matplotlib's grace_hopper.jpg), resized with Lanczos so the short side is
             the size, then centre-cropped square. They are 427-600 px originals, so at 1024² they
             are upscaled and smoother than a native 1024² photo (flattering to every codec).
  synthetic  made at the size itself: smooth gradients and soft blobs, hard-edged shapes, a band
             of fine texture and Gaussian noise (sigma 3), like a decoded diffusion frame with
             grain; the harder case.

For each codec, "write" is array -> bytes and "read" is bytes -> array (medians of --repeats
runs, in memory: the store's sha256 over the pixels and the file write are the same for every
codec and are shown once, as "sha256 ms"). Every codec is checked to round-trip bit-exact.

  python benchmarks/bench_store.py
  python benchmarks/bench_store.py --sizes 512 --repeats 9 --codecs raw,zlib-1,png-1
  python benchmarks/bench_store.py --json store.json
"""

import argparse
import bz2
import hashlib
import io
import json
import lzma
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features


# --- frames -------------------------------------------------------------------------------------


def photo_paths() -> list[Path]:
    """Photographs bundled with installed packages (no downloads)."""
    found = []
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        found += [folder / "china.jpg", folder / "flower.jpg"]
    except ImportError:
        pass
    try:
        import matplotlib

        found.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


def photo(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.LANCZOS)
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def synthetic(size: int, seed: int) -> np.ndarray:
    """Smooth gradients and blobs, hard-edged shapes, a band of fine texture, Gaussian noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.empty((size, size, 3))
    for c in range(3):  # a gradient and a few low-frequency waves per channel
        a, b, f1, f2, p1, p2 = rng.uniform(-1, 1, 2).tolist() + rng.uniform(1, 4, 2).tolist() + rng.uniform(0, 6.3, 2).tolist()
        image[..., c] = 128 + 60 * (a * x + b * y) + 30 * np.sin(f1 * np.pi * x + p1) * np.cos(f2 * np.pi * y + p2)
    for _ in range(6):  # soft blobs
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
        image += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(-60, 60, 3)
    for _ in range(8):  # hard-edged discs and rectangles
        colour = rng.uniform(0, 255, 3)
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r if rng.random() < 0.5 else (abs(x - cx) < r) & (abs(y - cy) < r / 2)
        image[mask] = 0.3 * image[mask] + 0.7 * colour
    band = (y > 0.6) & (y < 0.8)  # fine texture: noise blurred over a few pixels
    texture = rng.normal(0, 1, (size, size))
    kernel = np.ones(3) / 3
    texture = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 1, texture)
    image[band] += 25 * texture[band][:, None]
    image += rng.normal(0, 3, image.shape)  # grain
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- codecs: encode(array) -> bytes, decode(bytes, shape) -> array -------------------------------


def raw_encode(a):
    return a.tobytes()


def raw_decode(b, shape):
    return np.frombuffer(b, np.uint8).reshape(shape).copy()


def zlib_codec(level):
    def encode(a):
        return zlib.compress(a.tobytes(), level)

    def decode(b, shape):
        return np.frombuffer(zlib.decompress(b), np.uint8).reshape(shape)

    return encode, decode


def filtered_zlib(axis, strategy):
    """A PNG filter in numpy, then zlib level 1: axis 1 is "Sub" (each byte minus the same channel's
    byte to its left, mod 256), axis 0 is "Up" (minus the byte above); `strategy` is zlib's (Z_RLE:
    runs only, no string matching). Decoding is inflate, then a running sum along the axis.
    "up+zlib-rle" is what latentwalk/store.py writes (format 4, codec 1)."""

    def encode(a):
        delta = a.copy()
        if axis == 0:
            delta[1:] -= a[:-1]
        else:
            delta[:, 1:] -= a[:, :-1]
        packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, strategy)
        return packer.compress(delta) + packer.flush()

    def decode(b, shape):
        delta = np.frombuffer(zlib.decompress(b), np.uint8).reshape(shape)
        if axis == 1:
            return np.cumsum(delta, axis=1, dtype=np.uint8)
        pixels = delta.copy()
        for row in range(1, shape[0]):  # as latentwalk/store.py: much faster than np.cumsum(axis=0)
            np.add(pixels[row - 1], pixels[row], out=pixels[row])
        return pixels

    return encode, decode


def png_codec(level):
    def encode(a):
        out = io.BytesIO()
        Image.fromarray(a).save(out, format="PNG", compress_level=level)
        return out.getvalue()

    return encode, pillow_decode


def webp_encode(a):
    out = io.BytesIO()
    Image.fromarray(a).save(out, format="WEBP", lossless=True, method=0, quality=0, exact=True)
    return out.getvalue()


def pillow_decode(b, shape):
    with Image.open(io.BytesIO(b)) as image:
        return np.asarray(image.convert("RGB"))


CODECS = {
    "raw": (raw_encode, raw_decode),
    "zlib-1": zlib_codec(1),
    "zlib-6": zlib_codec(6),
    "png-1": png_codec(1),
    "png-6": png_codec(6),
    "sub+zlib-1": filtered_zlib(1, zlib.Z_DEFAULT_STRATEGY),
    "up+zlib-1": filtered_zlib(0, zlib.Z_DEFAULT_STRATEGY),
    "sub+zlib-rle": filtered_zlib(1, zlib.Z_RLE),
    "up+zlib-rle": filtered_zlib(0, zlib.Z_RLE),
    "bz2-1": (lambda a: bz2.compress(a.tobytes(), 1), lambda b, s: np.frombuffer(bz2.decompress(b), np.uint8).reshape(s)),
    "lzma-0": (lambda a: lzma.compress(a.tobytes(), preset=0), lambda b, s: np.frombuffer(lzma.decompress(b), np.uint8).reshape(s)),
}
if features.check("webp"):
    CODECS["webp-lossless-m0"] = (webp_encode, pillow_decode)


# --- measuring ----------------------------------------------------------------------------------


def timed(fn, *args, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append((time.perf_counter() - start) * 1000)
    return result, statistics.median(times)


def measure(frames, codecs, repeats):
    rows = []
    for name in codecs:
        encode, decode = CODECS[name]
        sizes, writes, reads = [], [], []
        for frame in frames:
            data, write_ms = timed(encode, frame, repeats=repeats)
            back, read_ms = timed(decode, data, frame.shape, repeats=repeats)
            if not np.array_equal(back, frame):
                raise SystemExit(f"{name}: not a bit-exact round trip")
            sizes.append(len(data))
            writes.append(write_ms)
            reads.append(read_ms)
        rows.append({
            "codec": name,
            "bytes": round(statistics.mean(sizes)),
            "ratio": statistics.mean(sizes) / frames[0].size,
            "write_ms": statistics.median(writes),
            "read_ms": statistics.median(reads),
        })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512,1024", help="square frame sides (default 512,1024)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per frame and codec; the median is shown (default 5)")
    parser.add_argument("--codecs", default=",".join(CODECS), help=f"comma-separated, of {', '.join(CODECS)}")
    parser.add_argument("--synthetic", type=int, default=2, help="synthetic frames per size (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    codecs = [c for c in args.codecs.split(",") if c]
    unknown = [c for c in codecs if c not in CODECS]
    if unknown:
        parser.error(f"unknown codecs: {', '.join(unknown)}")
    photos = photo_paths()
    print(f"photos: {', '.join(p.name for p in photos) or 'none found'}; synthetic: {args.synthetic} per size")
    print(f"zlib {zlib.ZLIB_VERSION}, Pillow {Image.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}")
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        kinds = {"photo": [photo(p, size) for p in photos], "synthetic": [synthetic(size, seed) for seed in range(args.synthetic)]}
        for kind, frames in kinds.items():
            if not frames:
                continue
            _, sha_ms = timed(lambda f: hashlib.sha256(f.tobytes()).digest(), frames[0], repeats=args.repeats)
            print(f"\n{size}x{size}x3 {kind} ({len(frames)} frames, raw {frames[0].size:,} bytes; sha256 {sha_ms:.1f} ms)")
            print(f"  {'codec':<18}{'bytes/frame':>13}{'of raw':>9}{'write ms':>10}{'read ms':>9}")
            for row in measure(frames, codecs, args.repeats):
                print(f"  {row['codec']:<18}{row['bytes']:>13,}{row['ratio']:>8.1%}{row['write_ms']:>10.1f}{row['read_ms']:>9.1f}")
                results.append({"size": size, "kind": kind, "frames": len(frames), "sha256_ms": sha_ms, **row})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
