import re

import numpy as np
import pytest

from latentwalk.toy import world

# Mean-statistic gaps between attribute values, on [0, 1] pixel values, averaged over
# pictures that share everything else. Measured gaps are several times larger.
NIGHT_DARKER_BY = 0.3  # mean brightness, day minus night
SNOW_WHITER_BY = 0.1  # mean of min(R, G, B), snow minus clear
SUNSET_WARMER_BY = 0.2  # mean R - B, sunset minus day
FOG_FLATTER_BY = 0.05  # per-picture std, clear minus fog


def render_many(rng: np.random.Generator, n: int = 12, **fixed: str) -> np.ndarray:
    """(n, H, W, 3) float pictures in [0, 1], with `fixed` attributes and the rest random."""
    images = []
    for _ in range(n):
        a = world.random_attributes(rng, held_out=())
        a = world.Attributes(
            fixed.get("time", a.time), fixed.get("weather", a.weather),
            fixed.get("landscape", a.landscape),
        )
        images.append(world.render_scene(a, rng))
    return np.stack(images).astype(np.float64) / 255


def test_sample_is_deterministic_for_a_seed():
    a = [world.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0].caption == a[1].caption
    assert a[0].attributes == a[1].attributes
    np.testing.assert_array_equal(a[0].image, a[1].image)
    b = world.sample(np.random.default_rng(8))
    assert not np.array_equal(a[0].image, b.image)


def test_pictures_are_uint8_rgb():
    scene = world.sample(np.random.default_rng(0))
    assert scene.image.shape == (world.SIZE, world.SIZE, 3)
    assert scene.image.dtype == np.uint8


def test_captions_use_only_vocabulary_words_and_name_the_attributes():
    rng = np.random.default_rng(1)
    vocabulary = set(world.VOCABULARY)
    for _ in range(300):
        scene = world.sample(rng)
        words = re.split(r"[ ,]+", scene.caption)
        assert set(words) <= vocabulary, scene.caption
        a = scene.attributes
        assert set(words) & {w for p in world.LAND_NOUNS[a.landscape] for w in p.split()}, scene.caption
        assert set(words) & {"day", "daytime", "sunset", "dusk", "night", "nighttime"}, scene.caption
        if a.colour is not None:
            assert a.colour in words, scene.caption


def test_held_out_pairs_are_never_sampled_but_can_be_rendered():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(1500):
        a = world.sample(rng).attributes
        assert not world.is_held_out(a)
        seen.add((a.time, a.weather, a.landscape))
    # every other (time, weather, landscape) triple does occur
    allowed = {
        (t, w, land) for t in world.TIMES for w in world.WEATHERS for land in world.LANDSCAPES
        if not world.is_held_out(world.Attributes(t, w, land))
    }
    assert seen == allowed
    assert len(world.HELD_OUT) >= 2
    image = world.render_scene(world.Attributes("day", "snow", "desert"), rng)
    assert image.shape == (world.SIZE, world.SIZE, 3)


def test_objects_respect_the_time_of_day():
    rng = np.random.default_rng(3)
    for _ in range(500):
        a = world.sample(rng).attributes
        assert not ("sun" in a.objects and a.time == "night")
        assert not ("stars" in a.objects and a.time != "night")


@pytest.mark.parametrize("landscape", world.LANDSCAPES)
def test_night_is_darker_than_day(landscape):
    rng = np.random.default_rng(4)
    day = render_many(rng, time="day", landscape=landscape)
    night = render_many(rng, time="night", landscape=landscape)
    assert day.mean() - night.mean() > NIGHT_DARKER_BY


@pytest.mark.parametrize("time", world.TIMES)
def test_snow_is_whiter_than_clear(time):
    rng = np.random.default_rng(5)
    snow = render_many(rng, time=time, weather="snow").min(-1).mean()
    clear = render_many(rng, time=time, weather="clear").min(-1).mean()
    assert snow - clear > SNOW_WHITER_BY * (0.5 if time == "night" else 1)


def test_sunset_is_warmer_than_day_and_night():
    rng = np.random.default_rng(6)
    warmth = {t: (lambda im: (im[..., 0] - im[..., 2]).mean())(render_many(rng, time=t)) for t in world.TIMES}
    assert warmth["sunset"] - warmth["day"] > SUNSET_WARMER_BY
    assert warmth["sunset"] - warmth["night"] > SUNSET_WARMER_BY


def test_fog_flattens_contrast():
    rng = np.random.default_rng(7)
    fog = render_many(rng, time="day", weather="fog").std(axis=(1, 2)).mean()
    clear = render_many(rng, time="day", weather="clear").std(axis=(1, 2)).mean()
    assert clear - fog > FOG_FLATTER_BY


def test_generation_is_fast():
    import time

    rng = np.random.default_rng(8)
    start = time.perf_counter()
    for _ in range(100):
        world.sample(rng)
    assert time.perf_counter() - start < 3.0  # >2000 pictures a minute even on a busy CPU
