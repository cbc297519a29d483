"""Image keyframes' pictures: read, checked, fitted to the render's size, and hashed. Torch-free.

The timeline checks every picture when it is read (a missing, unreadable, truncated or huge
file fails there, before any model loads); the render fits each one to the frame size and
names it by the content hash of exactly the pixels the model is given, so a picture's frames
are keyed by what it shows (a re-saved file with the same pixels keeps them, any changed pixel
does not). See docs/pictures.md.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# A picture is decoded whole when the timeline is read (the only sure test of a truncated
# file); past this many pixels that alone takes seconds and gigabytes. 40 MP holds an 8K
# frame (7680 x 4320 = 33 MP) and every phone camera's photo.
MAX_PICTURE_PIXELS = 40_000_000
MAX_PICTURE_BYTES = 200_000_000  # a file this large is no picture a render means to use
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class PictureInfo:
    """A checked picture file: its size as stored (after EXIF orientation)."""

    path: str
    width: int
    height: int

    def fit_note(self, width: int, height: int) -> str:
        """How the picture becomes a width x height frame, in words ("" when it already is one)."""
        if (self.width, self.height) == (width, height):
            return ""
        cropped = self.width * height != self.height * width
        return f"resized from {self.width}x{self.height}" + (" (centre-cropped to the frame's aspect)" if cropped else "")


def check_picture(path: Path) -> PictureInfo:
    """Read a picture whole (header, pixels, checksums); a ValueError says in words what is wrong."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"picture not found: {str(path)!r}")
    size = path.stat().st_size
    if size > MAX_PICTURE_BYTES:
        raise ValueError(f"{str(path)!r} is {size:,} bytes, more than the limit of {MAX_PICTURE_BYTES:,} for a picture")
    try:
        with Image.open(path) as image:
            w, h = image.size  # the header alone: checked before decoding anything
            if w * h > MAX_PICTURE_PIXELS:
                raise ValueError(
                    f"{str(path)!r} is {w}x{h} ({w * h / 1e6:.0f} MP), more than the limit of {MAX_PICTURE_PIXELS / 1e6:.0f} MP; "
                    "scale it down first (the render fits it to the frame size anyway)"
                )
            image.load()  # decodes every pixel: a truncated or damaged file fails here
            w, h = ImageOps.exif_transpose(image).size
    except UnidentifiedImageError:
        raise ValueError(f"{str(path)!r} is not a picture Pillow can read (expected PNG, JPEG, WebP, BMP or TIFF)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None
    except (OSError, SyntaxError, EOFError) as e:  # Pillow's errors for truncated and damaged files
        raise ValueError(f"cannot read {str(path)!r}: {e} (a truncated or damaged file?)") from None
    return PictureInfo(str(path), w, h)


def fit_picture(path: str | Path, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: the picture scaled to cover the frame and centre-cropped (alpha dropped)."""
    return _fit(str(path), *_stamp(Path(path)), width, height).copy()


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=32)
def _fit(path: str, mtime_ns: int, size: int, width: int, height: int) -> np.ndarray:
    """Cached by file stamp: a render keys and renders the same pictures several times."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    pixels = np.asarray(fitted, dtype=np.uint8)  # (H, W, 3)
    pixels.setflags(write=False)
    return pixels


def picture_key(pixels: np.ndarray) -> str:
    """Content hash of (H, W, 3) uint8 pixels (the same as engine.image_key of an init image)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest()


def timeline_pictures(keyframes, width: int, height: int) -> dict[str, np.ndarray]:
    """Picture key → fitted pixels of every image keyframe (timeline.Keyframe) at the frame size."""
    pictures = {}
    for keyframe in keyframes:
        if keyframe.image is not None:
            pixels = fit_picture(keyframe.image, width, height)
            pictures[picture_key(pixels)] = pixels
    return pictures


def keyframe_picture_keys(keyframes, width: int, height: int) -> list[str | None]:
    """Each keyframe's picture key at the frame size (None: a prompt keyframe)."""
    return [None if k.image is None else picture_key(fit_picture(k.image, width, height)) for k in keyframes]


def picture_plan(schedule, width: int, height: int) -> list[dict]:
    """Which frames use which picture (schedule.Plan): per image keyframe, its file, size, fit and frames.

    A frame uses a picture when it travels from or toward its keyframe (or holds it).
    """
    out = []
    for k in schedule.keyframes:
        if k.keyframe.image is None:
            continue
        info = check_picture(Path(k.keyframe.image))
        frames = [r.frame for r in schedule.frames if k.index in (r.segment, r.target)]
        out.append({
            "keyframe": k.index,
            "frame": k.frame,
            "image": k.keyframe.image,
            "size": [info.width, info.height],
            "fit": info.fit_note(width, height) or "as is",
            "frames": [min(frames), max(frames)] if frames else None,
            "frame_count": len(frames),
        })
    return out


def picture_notes(schedule, width: int, height: int) -> list[str]:
    """`latentwalk plan`'s lines about image keyframes: which picture, how it is fitted, which frames use it."""
    notes = []
    for p in picture_plan(schedule, width, height):
        fit = "used as is" if p["fit"] == "as is" else f"{p['fit']} to {width}x{height}"
        frames = f"; frames {p['frames'][0]}-{p['frames'][1]} ({p['frame_count']}) travel from or toward it" if p["frames"] else ""
        notes.append(f"note: keyframe {p['keyframe']} (frame {p['frame']}) is the picture {p['image']}: {fit}{frames}")
    return notes
