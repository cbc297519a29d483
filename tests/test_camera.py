"""Camera warps against analytic expectations, CIELAB, colour coherence tools and cadence fills."""

import math

import numpy as np
import pytest
import torch

from latentwalk.camera import (
    ColourStats,
    Motion,
    add_noise,
    cadence_fill,
    colour_stats,
    diffused_indices,
    focal_length,
    guard,
    lab_to_rgb,
    match_colour,
    motion_matrix,
    rgb_to_lab,
    warp,
    warp_matrix,
)


def pattern(size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((size, size, 3)).astype(np.float32)


def ramp_x(size: int = 32) -> np.ndarray:
    """Each pixel holds its own centre's x coordinate: bilinear sampling of it is exact."""
    x = np.arange(size) + 0.5
    return np.broadcast_to(x[None, :, None], (size, size, 3)).astype(np.float32)


def test_identity_is_exact_and_a_copy():
    image = pattern()
    out = warp(image, zoom=1.0, angle_deg=0.0, tx=0.0, ty=0.0)
    assert np.array_equal(out, image) and out is not image
    batch = torch.from_numpy(np.stack([image, image[::-1].copy()])).permute(0, 3, 1, 2)
    same = warp(batch)
    assert torch.equal(same, batch) and same.data_ptr() != batch.data_ptr()


def test_integer_translation_moves_content_by_those_pixels():
    image = pattern()
    out = warp(image, tx=3, ty=-2)  # right 3, up 2
    # out[y, x] = image[y + 2, x - 3], away from the borders
    assert np.abs(out[4:28, 6:28] - image[6:30, 3:25]).max() < 1e-5
    assert np.abs(out[4:28, 6:28] - image[4:28, 6:28]).max() > 0.5  # it did move


def test_zoom_two_doubles_distances_from_the_centre():
    image = ramp_x(32)
    out = warp(image, zoom=2.0)
    x = np.arange(32) + 0.5
    expected = 16 + (x - 16) / 2  # output pixel x shows what sat halfway to the centre
    assert np.abs(out[10, :, 0] - expected).max() < 1e-4
    odd = warp(ramp_x(33), zoom=2.0)
    assert odd[16, 16, 0] == pytest.approx(16.5, abs=1e-4)  # the centre pixel stays put


@pytest.mark.parametrize("angle, turns", [(90, 1), (180, 2), (-90, 3), (450, 1)])
def test_quarter_turns_of_a_square_are_exact(angle, turns):
    image = pattern(16)
    assert np.abs(warp(image, angle_deg=angle) - np.rot90(image, turns)).max() < 1e-5  # counter-clockwise on screen


def test_small_rotation_turns_a_ramp_counter_clockwise():
    out = warp(ramp_x(33), angle_deg=10)
    # Counter-clockwise on screen: the pixel 10 above the centre now shows what sat up and to the right.
    above, below = out[6, 16, 0], out[26, 16, 0]
    assert above == pytest.approx(16.5 + 10 * math.sin(math.radians(10)), abs=1e-3)
    assert below == pytest.approx(16.5 - 10 * math.sin(math.radians(10)), abs=1e-3)


@pytest.mark.parametrize("border", ["reflect", "replicate"])
def test_zoom_out_borders_carry_picture_not_black(border):
    image = 0.4 + 0.2 * pattern(32)  # content in [0.4, 0.6]
    out = warp(image, zoom=0.5, angle_deg=30, tx=5, border=border)
    edges = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert edges.min() >= 0.4 - 1e-6 and edges.max() <= 0.6 + 1e-6


def test_bad_border_is_refused():
    with pytest.raises(ValueError, match="border"):
        warp(pattern(), zoom=1.1, border="zeros")


def test_camera_forward_equals_zoom_and_pan_moves_content_left():
    image = pattern(32)
    f = focal_length(32)
    assert np.abs(warp(image, translate_z=f * (1 - 1 / 1.3)) - warp(image, zoom=1.3)).max() < 1e-5
    pan = warp(ramp_x(32), rotation_y=5)
    # The centre now shows what sat f·tan(5°) to its right.
    assert pan[16, 16, 0] == pytest.approx(16.5 + f * math.tan(math.radians(5)), abs=0.05)
    tilt = warp(np.transpose(ramp_x(32), (1, 0, 2)), rotation_x=5)  # a ramp in y
    assert tilt[16, 16, 0] == pytest.approx(16.5 - f * math.tan(math.radians(5)), abs=0.05)


def test_batch_with_a_matrix_per_image_matches_one_by_one():
    images = np.stack([pattern(16, s) for s in range(3)])
    motions = [Motion(zoom=1.1), Motion(angle=7, translate_x=1.5), Motion(rotation_y=3)]
    matrices = np.stack([motion_matrix(m, 16, 16) for m in motions])
    together = warp_matrix(images, matrices)
    for i in range(3):
        assert np.abs(together[i] - warp_matrix(images[i], matrices[i])).max() < 1e-6


def test_lab_round_trip_and_known_values():
    colours = np.random.default_rng(1).random((10000, 3))
    assert np.abs(lab_to_rgb(rgb_to_lab(colours)) - colours).max() < 1e-4
    assert np.allclose(rgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-9)
    assert np.allclose(rgb_to_lab(np.zeros(3)), [0, 0, 0], atol=1e-9)
    assert np.allclose(rgb_to_lab(np.array([1.0, 0, 0])), [53.2408, 80.0925, 67.2032], atol=1e-3)  # sRGB red


def test_colour_matching_gives_the_reference_statistics():
    image = 0.3 + 0.4 * pattern(32)
    reference = ColourStats(mean=(55.0, 8.0, -6.0), std=(6.0, 3.0, 2.5))
    matched = colour_stats(match_colour(image, reference))
    assert np.allclose(matched.mean, reference.mean, atol=0.05) and np.allclose(matched.std, reference.std, atol=0.05)
    untouched = match_colour(image, reference, amount=0.0)
    assert np.abs(untouched - image).max() < 1e-4


def test_noise_is_seeded_and_of_the_asked_size():
    image = np.full((64, 64, 3), 0.5, dtype=np.float32)
    a, b = add_noise(image, 0.02, seed=7), add_noise(image, 0.02, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, add_noise(image, 0.02, seed=8))
    assert (a - image).std() == pytest.approx(0.02, rel=0.05)
    assert np.array_equal(add_noise(image, 0.0, seed=7), image)


def test_guard_bounds_contrast_and_sharpens_edges():
    image = 0.2 + 0.6 * pattern(32)
    stats = colour_stats(image)
    flat = ColourStats(stats.mean, (stats.std[0] / 2, *stats.std[1:]))
    held = colour_stats(guard(image, flat, max_contrast=1.1))
    assert held.std[0] == pytest.approx(flat.std[0] * 1.1, rel=0.02)
    edge = np.zeros((16, 16, 3), dtype=np.float32)
    edge[:, 8:] = 0.5
    edge += 0.25
    sharp = guard(edge, colour_stats(edge), sharpen=0.5)
    assert sharp[:, 7].mean() < 0.25 and sharp[:, 8].mean() > 0.75  # overshoot either side of the edge
    assert np.array_equal(guard(edge, colour_stats(edge), sharpen=5.0), guard(edge, colour_stats(edge), sharpen=1.0))


def test_cadence_fill_follows_the_camera_between_diffused_frames():
    image = pattern(32)
    step = motion_matrix(Motion(translate_x=2), 32, 32)
    n_between = 3
    frame_b = warp(image, tx=2 * (n_between + 1))  # the scene as the camera sees it 4 steps later
    filled = cadence_fill(image, frame_b, n_between, [step] * (n_between + 1))
    assert filled.shape == (n_between, 32, 32, 3)
    for j in range(1, n_between + 1):
        # Interior pixels that both a and b still show: exactly the content moved j steps.
        assert np.abs(filled[j - 1][:, 12:22] - warp(image, tx=2 * j)[:, 12:22]).max() < 1e-5
    still = cadence_fill(image, 1 - image, 1, [np.eye(3)] * 2)
    assert np.abs(still[0] - 0.5).max() < 1e-6  # halfway cross-fade
    with pytest.raises(ValueError, match="needs 3 steps"):
        cadence_fill(image, image, 2, [step])


@pytest.mark.parametrize("n, cadence, expected", [(10, 3, (0, 3, 6, 9)), (11, 3, (0, 3, 6, 9, 10)), (4, 1, (0, 1, 2, 3)), (1, 5, (0,))])
def test_diffused_frames_of_a_cadence(n, cadence, expected):
    assert diffused_indices(n, cadence) == expected
