"""A procedural world of captioned 128x128 landscapes that the embedded toy model learns.

Every attribute has a strong, global look (night is dark, snow is white, sunset is warm,
fog is grey and flat) so that a model trained for minutes on a CPU picks it up, and the
attributes combine freely so that prompts can travel between them. A few combinations are
never rendered for training (`HELD_OUT`), to check that the model composes what it knows.
"""

import re
from dataclasses import dataclass

import numpy as np

SIZE = 128  # pixels per side

TIMES = ("day", "sunset", "night")
WEATHERS = ("clear", "snow", "rain", "fog")
LANDSCAPES = ("mountains", "sea", "forest", "desert", "city")
OBJECTS = ("sun", "moon", "stars", "clouds", "trees")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.15, 0.1),
    "orange": (1.0, 0.55, 0.1),
    "yellow": (1.0, 0.9, 0.2),
    "white": (1.0, 1.0, 1.0),
    "pink": (1.0, 0.5, 0.75),
    "blue": (0.3, 0.55, 1.0),
    "green": (0.3, 0.9, 0.3),
    "purple": (0.6, 0.3, 0.95),
}
# Pairs of attribute values never sampled for training; the model must compose them.
HELD_OUT: tuple[tuple[str, str], ...] = (("snow", "desert"), ("sunset", "city"), ("fog", "forest"))

# Sky (top, horizon) colours and the light that falls on the ground, per time of day.
SKY = {
    "day": ((0.22, 0.48, 0.9), (0.65, 0.82, 0.98)),
    "sunset": ((0.35, 0.13, 0.45), (1.0, 0.5, 0.18)),
    "night": ((0.01, 0.02, 0.07), (0.06, 0.08, 0.2)),
}
LIGHT = {"day": (1.0, 1.0, 1.0), "sunset": (0.85, 0.5, 0.42), "night": (0.17, 0.19, 0.32)}
FOG = {"day": (0.8, 0.82, 0.85), "sunset": (0.8, 0.62, 0.55), "night": (0.22, 0.24, 0.3)}
BODY_DEFAULT = {"sun": {"day": (1.0, 0.97, 0.75), "sunset": (1.0, 0.55, 0.15)}, "moon": (0.95, 0.95, 0.85)}

# Caption vocabulary, per attribute value; each entry is one interchangeable phrase.
TIME_NOUNS = {"day": ("day",), "sunset": ("sunset", "dusk"), "night": ("night",)}
TIME_LISTED = {"day": ("day", "daytime"), "sunset": ("sunset", "dusk"), "night": ("night", "nighttime")}
TIME_PHRASES = {
    "day": ("during the day", "by day", "in the daytime"),
    "sunset": ("at sunset", "at dusk"),
    "night": ("at night", "by night"),
}
WEATHER_ADJS = {"clear": ("clear",), "snow": ("snowy",), "rain": ("rainy",), "fog": ("foggy", "misty")}
WEATHER_NOUNS = {"clear": ("clear sky",), "snow": ("snow",), "rain": ("rain",), "fog": ("fog", "mist")}
WEATHER_PHRASES = {
    "clear": ("under a clear sky",),
    "snow": ("in the snow", "with falling snow"),
    "rain": ("in the rain",),
    "fog": ("in the fog", "in the mist"),
}
LAND_NOUNS = {
    "mountains": ("mountains",),
    "sea": ("sea", "ocean"),
    "forest": ("forest", "woods"),
    "desert": ("desert", "dunes"),
    "city": ("city", "town"),
}
GLUE = ("a", "an", "the", "over", "with", "on", "under", "and")


def _words(*tables: dict) -> set[str]:
    return {w for t in tables for phrases in t.values() for p in phrases for w in p.split()}


VOCABULARY: tuple[str, ...] = tuple(
    sorted(
        _words(TIME_NOUNS, TIME_LISTED, TIME_PHRASES, WEATHER_ADJS, WEATHER_NOUNS)
        | _words(WEATHER_PHRASES, LAND_NOUNS)
        | set(OBJECTS) | set(COLOURS) | set(GLUE)
    )
)


@dataclass(frozen=True)
class Attributes:
    """What a picture shows; `colour` tints the sun or moon named in `objects`."""

    time: str
    weather: str
    landscape: str
    objects: tuple[str, ...] = ()
    colour: str | None = None

    def values(self) -> tuple[str, ...]:
        """Every attribute value, for matching against `HELD_OUT` pairs."""
        return (self.time, self.weather, self.landscape, *self.objects)


@dataclass(frozen=True)
class Scene:
    """One training example."""

    image: np.ndarray  # (SIZE, SIZE, 3) uint8
    caption: str
    attributes: Attributes


def is_held_out(attributes: Attributes, held_out: tuple[tuple[str, str], ...] = HELD_OUT) -> bool:
    """Whether the attributes contain one of the held-out pairs."""
    values = set(attributes.values())
    return any(a in values and b in values for a, b in held_out)


def allowed_objects(time: str, weather: str, landscape: str) -> tuple[str, ...]:
    """Objects that make sense in a scene: no sun at night, stars only in a clear-ish night."""
    allowed = ["clouds"]
    if time != "night":
        allowed.append("sun")
    if time != "day":
        allowed.append("moon")
    if time == "night" and weather in ("clear", "snow"):
        allowed.append("stars")
    if landscape not in ("forest", "sea"):
        allowed.append("trees")
    return tuple(o for o in OBJECTS if o in allowed)


def random_attributes(
    rng: np.random.Generator, held_out: tuple[tuple[str, str], ...] = HELD_OUT
) -> Attributes:
    """Uniform time, weather and landscape (rejecting held-out pairs), plus a few objects."""
    while True:
        time, weather, landscape = (str(rng.choice(v)) for v in (TIMES, WEATHERS, LANDSCAPES))
        if not is_held_out(Attributes(time, weather, landscape), held_out):
            break
    allowed = allowed_objects(time, weather, landscape)
    chosen: list[str] = []
    bodies = [b for b in ("sun", "moon") if b in allowed]
    if bodies and rng.random() < 0.6:
        chosen.append(str(rng.choice(bodies)))
    for extra, p in (("stars", 0.7), ("clouds", 0.3), ("trees", 0.3)):
        if extra in allowed and rng.random() < p:
            chosen.append(extra)
    colour = str(rng.choice(list(COLOURS))) if chosen[:1] in (["sun"], ["moon"]) and rng.random() < 0.5 else None
    return Attributes(time, weather, landscape, tuple(o for o in OBJECTS if o in chosen), colour)


# ---------------------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrases(attributes: Attributes, rng: np.random.Generator, listed: bool) -> list[str]:
    """One phrase per object; captions sometimes leave an uncoloured extra unmentioned."""
    phrases = []
    for obj in attributes.objects:
        coloured = obj in ("sun", "moon") and attributes.colour is not None
        if not coloured and obj in ("clouds", "trees") and rng.random() < 0.2:
            continue
        name = f"{attributes.colour} {obj}" if coloured else obj
        if listed:
            phrases.append(name)
        elif obj in ("sun", "moon"):
            phrases.append(f"with {_article(name)} {name}" if coloured else _pick(rng, (f"with the {obj}", f"under the {obj}")))
        else:
            phrases.append(_pick(rng, (f"with {obj}", f"under the {obj}")) if obj == "stars" else f"with {obj}")
    return phrases


def caption(attributes: Attributes, rng: np.random.Generator) -> str:
    """A prompt-like caption with varied grammar and word order, e.g. 'mountains at night in the snow'."""
    t, w, land = attributes.time, attributes.weather, _pick(rng, LAND_NOUNS[attributes.landscape])
    skip_clear = w == "clear" and rng.random() < 0.6
    template = int(rng.integers(5))
    if template == 0:  # a snowy night over the mountains
        adj = "" if skip_clear else _pick(rng, WEATHER_ADJS[w]) + " "
        noun = _pick(rng, TIME_NOUNS[t])
        head = f"{_article(adj or noun)} {adj}{noun} over the {land}"
    elif template == 1:  # mountains at night in the snow
        parts = [_pick(rng, TIME_PHRASES[t])] + ([] if skip_clear else [_pick(rng, WEATHER_PHRASES[w])])
        if rng.random() < 0.5:
            parts.reverse()
        head = " ".join([("the " if rng.random() < 0.3 else "") + land, *parts])
    elif template == 2:  # snowy mountains at night
        adj = "" if skip_clear else _pick(rng, WEATHER_ADJS[w]) + " "
        head = f"{adj}{land} {_pick(rng, TIME_PHRASES[t])}"
    elif template == 3:  # the sea on a rainy night
        adj = _pick(rng, WEATHER_ADJS[w])
        head = f"the {land} on {_article(adj)} {adj} {_pick(rng, TIME_NOUNS[t])}"
    else:  # city, rain, day
        items = [land, _pick(rng, TIME_LISTED[t])] + ([] if skip_clear else [_pick(rng, WEATHER_NOUNS[w])])
        items += _object_phrases(attributes, rng, listed=True)
        return ", ".join(items[i] for i in rng.permutation(len(items)))
    extras = _object_phrases(attributes, rng, listed=False)
    # "with the moon and stars", not "with the moon with stars"
    extras = [extras[0]] + [re.sub(r"^with ", "and ", e) for e in extras[1:]] if extras else []
    return " ".join([head, *extras])


# ---------------------------------------------------------------------------- rendering

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _blend(image: np.ndarray, colour, alpha: np.ndarray | float) -> np.ndarray:
    """Alpha-blend a colour (or image) over `image`; alpha is (H, W) or a scalar."""
    a = alpha[..., None] if isinstance(alpha, np.ndarray) else alpha
    return image * (1 - a) + np.asarray(colour, np.float32) * a


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased disc coverage, (H, W) in [0, 1]."""
    return np.clip(r + 0.5 - np.hypot(_X - cx, _Y - cy), 0, 1)


def _sky(time: str, horizon: float) -> np.ndarray:
    top, bottom = (np.asarray(c, np.float32) for c in SKY[time])
    t = np.clip(_Y / horizon, 0, 1)[..., None] ** 1.5
    return top * (1 - t) + bottom * t


def _clouds(image: np.ndarray, time: str, horizon: float, rng: np.random.Generator) -> np.ndarray:
    colour = {"day": (0.97, 0.97, 1.0), "sunset": (1.0, 0.62, 0.58), "night": (0.2, 0.22, 0.3)}[time]
    cover = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0, SIZE), rng.uniform(8, horizon * 0.7)
        for _ in range(int(rng.integers(3, 6))):
            bx, by = cx + rng.normal(0, 9), cy + rng.normal(0, 2.5)
            sx, sy = rng.uniform(6, 12), rng.uniform(3, 5)
            cover += np.exp(-(((_X - bx) / sx) ** 2 + ((_Y - by) / sy) ** 2))
    return _blend(image, colour, np.clip(cover, 0, 0.95))


def _body(image: np.ndarray, a: Attributes, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """The sun or moon, with a glow; a sunset sun sits low and is cut by the landscape."""
    kind = "sun" if "sun" in a.objects else "moon"
    default = BODY_DEFAULT["sun"][a.time] if kind == "sun" else BODY_DEFAULT["moon"]
    colour = np.asarray(COLOURS[a.colour] if a.colour else default, np.float32)
    r = rng.uniform(9, 14) if kind == "sun" else rng.uniform(7, 11)
    cx = rng.uniform(18, SIZE - 18)
    low = a.time == "sunset" and kind == "sun"
    cy = rng.uniform(horizon - 22, horizon - 6) if low else rng.uniform(14, max(16, horizon - 30))
    glow = np.exp(-((_X - cx) ** 2 + (_Y - cy) ** 2) / (2 * (2.5 * r) ** 2)) * 0.35
    image = _blend(image, colour, glow)
    return _blend(image, colour, _disc(cx, cy, r))


def _stars(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(50, 110))
    ys, xs = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    out = image.copy()
    out[ys, xs] = rng.uniform(0.6, 1.0, (n, 1)).astype(np.float32)
    big = rng.random(n) < 0.3  # a few 2x2 stars stay visible after the VAE's downsampling
    out[np.minimum(ys[big] + 1, SIZE - 1), xs[big]] = out[ys[big], xs[big]]
    return out


def _landscape(landscape: str, horizon: float, rng: np.random.Generator):
    """(colour (H, W, 3), coverage (H, W), snow cover (H, W), lit windows (H, W))."""
    x = _X[0]
    colour = np.zeros((SIZE, SIZE, 3), np.float32)
    windows = np.zeros((SIZE, SIZE), np.float32)
    floor = (_Y >= horizon).astype(np.float32)
    if landscape == "mountains":
        far = horizon - np.max([rng.uniform(20, 45) - rng.uniform(0.8, 1.4) * np.abs(x - c) for c in rng.uniform(0, SIZE, 4)], axis=0)
        near = horizon + 6 - np.max([rng.uniform(15, 35) - rng.uniform(0.9, 1.6) * np.abs(x - c) for c in rng.uniform(0, SIZE, 3)], axis=0)
        far_mask, near_mask = (_Y >= far[None]), (_Y >= near[None])
        colour[:] = (0.5, 0.45, 0.42)
        colour[far_mask & ~near_mask] = (0.55, 0.58, 0.68)
        peak = np.clip(1 - (_Y - far[None].min()) / 12, 0, 1) * far_mask * ~near_mask  # snow caps
        colour = _blend(colour, (0.95, 0.95, 0.97), peak * 0.8)
        cover = (far_mask | near_mask).astype(np.float32)
        snow = cover * 0.85
    elif landscape == "sea":
        depth = np.clip((_Y - horizon) / (SIZE - horizon), 0, 1)[..., None]
        colour[:] = np.asarray((0.15, 0.4, 0.7), np.float32) * (1 - 0.5 * depth)
        waves = np.sin(_Y * 1.7 + 2.5 * np.sin(_X * 0.15 + rng.uniform(0, 6))) > 0.75
        colour = _blend(colour, (0.75, 0.85, 0.95), waves * floor * 0.5)
        cover, snow = floor, floor * 0.1  # snow melts on water; only the flakes show
    elif landscape == "forest":
        tops = np.max([rng.uniform(12, 30) - 2.2 * np.abs(x - c) for c in rng.uniform(-5, SIZE + 5, 22)], axis=0)
        canopy = _Y >= (horizon - tops)[None]
        colour[:] = (0.25, 0.5, 0.18)
        colour[canopy & (_Y < horizon + 3)] = (0.08, 0.3, 0.12)
        cover = canopy.astype(np.float32)
        snow = cover * 0.55 + floor * 0.35
    elif landscape == "desert":
        far = horizon + 3 * np.sin(x * rng.uniform(0.03, 0.06) + rng.uniform(0, 6)) - 4
        near = horizon + 14 + 6 * np.sin(x * rng.uniform(0.04, 0.08) + rng.uniform(0, 6))
        colour[:] = (0.93, 0.72, 0.4)
        colour[_Y >= near[None]] = (0.8, 0.55, 0.28)
        cover = (_Y >= far[None]).astype(np.float32)
        snow = cover * 0.85
    elif landscape == "city":
        heights = np.zeros(SIZE, np.float32)
        shade = np.zeros(SIZE, np.float32)
        left = 0
        while left < SIZE:
            width = int(rng.integers(8, 20))
            heights[left : left + width] = rng.uniform(15, 55)
            shade[left : left + width] = rng.uniform(0.3, 0.5)
            left += width + int(rng.integers(0, 3))
        roof = horizon - heights
        building = (_Y >= roof[None]) & (_Y < horizon)
        colour[:] = (0.3, 0.3, 0.33)
        colour[building] = (shade[None, :, None] * np.array([1.0, 1.0, 1.1], np.float32) * np.ones((SIZE, 1, 1), np.float32))[building]
        grid = ((_X.astype(int) % 5) < 2) & ((_Y.astype(int) % 6) < 3) & (_Y > roof[None] + 3)
        windows = (building & grid).astype(np.float32)
        cover = (building | (_Y >= horizon)).astype(np.float32)
        snow = floor * 0.85 + building * 0.2
    else:
        raise ValueError(f"unknown landscape {landscape!r}; expected one of {LANDSCAPES}")
    return colour, cover, snow, windows


def _trees(colour: np.ndarray, cover: np.ndarray, horizon: float, rng: np.random.Generator):
    colour, cover = colour.copy(), cover.copy()
    for _ in range(int(rng.integers(2, 6))):
        base, cx, r = rng.uniform(horizon + 8, SIZE - 4), rng.uniform(5, SIZE - 5), rng.uniform(5, 9)
        trunk = (np.abs(_X - cx) < 1.5) & (_Y <= base) & (_Y >= base - 2 * r)
        crown = _disc(cx, base - 2 * r, r)
        colour = _blend(_blend(colour, (0.35, 0.22, 0.12), trunk.astype(np.float32)), (0.1, 0.38, 0.12), crown)
        cover = np.maximum(cover, np.maximum(trunk, crown))
    return colour, cover


def _rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    grey = image.mean(-1, keepdims=True)
    out = (image * 0.5 + grey * 0.5) * 0.8
    n, length = int(rng.integers(140, 220)), 10
    x0, y0 = rng.uniform(-20, SIZE, n), rng.uniform(-length, SIZE, n)
    for k in range(length):  # slanted streaks, one pixel per step
        ys, xs = (y0 + k).astype(int), (x0 + 0.35 * k).astype(int)
        ok = (ys >= 0) & (ys < SIZE) & (xs >= 0) & (xs < SIZE)
        out[ys[ok], xs[ok]] = out[ys[ok], xs[ok]] * 0.45 + 0.72 * 0.55
    return out


def _snowflakes(image: np.ndarray, time: str, rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(250, 400))
    cover = np.zeros((SIZE, SIZE), np.float32)
    ys, xs = rng.integers(0, SIZE - 1, n), rng.integers(0, SIZE - 1, n)
    cover[ys, xs] = 1.0
    big = rng.random(n) < 0.5
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        cover[ys[big] + dy, xs[big] + dx] = 1.0
    return _blend(image, (0.97, 0.97, 1.0) if time != "night" else (0.8, 0.82, 0.9), cover * 0.9)


def render_scene(attributes: Attributes, rng: np.random.Generator) -> np.ndarray:
    """Render attributes to a (SIZE, SIZE, 3) uint8 picture; layout details come from `rng`."""
    a = attributes
    # 1. Sky, sky objects.
    horizon = rng.uniform(0.55, 0.7) * SIZE
    image = _sky(a.time, horizon)
    if "stars" in a.objects:
        image = _stars(image, rng)
    if "sun" in a.objects or "moon" in a.objects:
        image = _body(image, a, horizon, rng)
    if "clouds" in a.objects:
        image = _clouds(image, a.time, horizon, rng)
    if a.weather in ("snow", "rain"):  # overcast
        image = _blend(image, (0.75, 0.77, 0.8) if a.time != "night" else (0.12, 0.13, 0.17), 0.3)
    # 2. Landscape, lit by the time of day; snow covers it before the light falls on it.
    colour, cover, snow_cover, windows = _landscape(a.landscape, horizon, rng)
    if "trees" in a.objects:
        colour, cover = _trees(colour, cover, horizon, rng)
    if a.weather == "snow":
        colour = _blend(colour, (0.95, 0.96, 1.0), snow_cover)
    ground = colour * np.asarray(LIGHT[a.time], np.float32)
    lit = {"day": 0.0, "sunset": 0.5, "night": 1.0}[a.time]
    ground = _blend(ground, (1.0, 0.85, 0.4) if lit else (0.15, 0.2, 0.3), windows * (lit or 0.8))
    if a.landscape == "sea":  # water mirrors the sky's horizon colour
        ground = _blend(ground, SKY[a.time][1], 0.35 * (_Y >= horizon))
    image = _blend(image, ground, cover)
    # 3. Weather over everything.
    if a.weather == "snow":
        image = _snowflakes(image, a.time, rng)
    elif a.weather == "rain":
        image = _rain(image, rng)
    elif a.weather == "fog":
        image = _blend(image, FOG[a.time], 0.5 + 0.25 * (_Y / SIZE))
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def sample(rng: np.random.Generator, held_out: tuple[tuple[str, str], ...] = HELD_OUT) -> Scene:
    """A random training scene: attributes (never a held-out pair), picture and caption."""
    attributes = random_attributes(rng, held_out)
    image = render_scene(attributes, rng)
    return Scene(image, caption(attributes, rng), attributes)
