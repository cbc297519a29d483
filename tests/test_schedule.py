import re
import numpy as np
import pytest

from latentwalk.errors import UserError
from latentwalk.beats import beat_positions
from latentwalk.schedule import EASINGS, hold_then, paced_progress, plan_frames
from latentwalk.timeline import parse_timeline

BEATS = np.arange(0, 40) * 0.5 + 0.013  # 120 bpm, first beat slightly late, like a tracked grid


def timeline(keyframes: str, fps: float = 12, end: str = "{beat: 30}", extra: str = "") -> object:
    return parse_timeline(f"fps: {fps}\nend: {end}\naudio: {{bpm: 120}}\n{extra}keyframes:\n{keyframes}")


@pytest.mark.parametrize("name", sorted(EASINGS))
def test_easing_endpoints_and_monotone(name):
    t = np.linspace(0, 1, 1001)
    y = EASINGS[name](t)
    assert y[0] == 0.0 and y[-1] == 1.0
    assert np.all(np.diff(y) >= -1e-12)


def test_hold_then_travel():
    u = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(hold_then(u, 0.5), [0, 0, 0, 0.5, 1.0])


def test_uniform_pacing_is_k_over_n():
    np.testing.assert_array_equal(paced_progress(4), [0, 0.25, 0.5, 0.75])


def test_audio_pacing_moves_further_on_loud_frames():
    energy = np.array([1.0, 1.0, 9.0, 1.0])
    u = paced_progress(4, energy, strength=1.0)
    steps = np.diff(np.append(u, 1.0))
    assert steps[2] == pytest.approx(9 * steps[0])
    assert u[0] == 0 and np.all(np.diff(u) > 0)
    np.testing.assert_array_equal(paced_progress(4, energy, strength=0.0), paced_progress(4))


def test_beat_keyframes_land_on_rounded_beat_frames():
    tl = timeline("  - {beat: 0, prompt: a}\n  - {beat: 3.5, prompt: b}\n  - {bar: 2, prompt: c}\n", fps=24)
    plan = plan_frames(tl, BEATS, 120.0, None)
    frames = [k.frame for k in plan.keyframes]
    beat_times = [BEATS[0], (BEATS[3] + BEATS[4]) / 2, BEATS[8]]
    assert frames == [round(t * 24) for t in beat_times]
    assert plan.n_frames == round(BEATS[30] * 24)


@pytest.mark.parametrize("fps", [8, 12, 24, 25, 29.97, 60])
def test_fps_changes_keep_keyframes_on_their_beats(fps):
    tl = timeline("  - {beat: 0, prompt: a}\n  - {beat: 5, prompt: b}\n  - {bar: 3, prompt: c}\n", fps=fps)
    plan = plan_frames(tl, BEATS, 120.0, None)
    for key, beat in zip(plan.keyframes, [0, 5, 12]):
        assert key.time == pytest.approx(BEATS[beat])
        assert key.frame == round(BEATS[beat] * fps)
        assert abs(key.frame / fps - BEATS[beat]) <= 0.5 / fps + 1e-12


def test_each_keyframe_image_appears_once():
    tl = timeline("  - {frame: 0, prompt: a, seed: 1}\n  - {frame: 10, prompt: b, seed: 2}\n  - {frame: 20, prompt: c, seed: 3}\n", end="{frame: 30}")
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert plan.n_frames == 30
    pure = [(r.segment, r.t) for r in plan.frames if r.t == 0.0 and r.noise_t == 0.0]
    assert pure == [(0, 0.0), (1, 0.0)] + [(2, 0.0)] * 10  # the last keyframe holds to the end
    # no frame of a segment reaches t = 1, which would duplicate the next keyframe
    assert max(r.t for r in plan.frames if r.segment < 2) < 1.0
    assert [r.frame for r in plan.frames] == list(range(30))
    seg1 = [r for r in plan.frames if r.segment == 1]
    assert (seg1[0].seed_a, seg1[0].seed_b) == (2, 3)


def test_guidance_interpolates_between_keyframes():
    tl = timeline("  - {frame: 0, prompt: a, guidance: 2}\n  - {frame: 4, prompt: b, guidance: 10}\n", end="{frame: 6}")
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert [r.guidance for r in plan.frames] == [2, 4, 6, 8, 10, 10]


def test_noise_easing_differs_from_prompt_easing():
    tl = timeline("  - {frame: 0, prompt: a, easing: linear, noise_easing: hold, hold: 0.5}\n  - {frame: 4, prompt: b}\n", end="{frame: 5}")
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert [r.t for r in plan.frames[:4]] == [0, 0, 0, 0.5]  # hold applies to both...
    tl = timeline("  - {frame: 0, prompt: a, easing: smoothstep, noise_easing: linear}\n  - {frame: 4, prompt: b}\n", end="{frame: 5}")
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert [r.noise_t for r in plan.frames[:4]] == [0, 0.25, 0.5, 0.75]
    assert plan.frames[1].t == pytest.approx(0.25**2 * (3 - 0.5))


def test_beat_positions_extrapolate_at_tempo():
    pos = beat_positions(np.array([0.013, 0.263, 0.513, -0.237, 19.763]), BEATS, 120.0)
    np.testing.assert_allclose(pos, [0, 0.5, 1, -0.5, 39.5])


@pytest.mark.parametrize(
    "keyframes, message",
    [
        ("  - {beat: 4, prompt: a}\n  - {beat: 2, prompt: b}\n", "must be in order"),
        ("  - {beat: 2, prompt: a}\n  - {time: 1.013, prompt: b}\n", "same frame"),
        ("  - {beat: 0, prompt: a}\n  - {beat: 45, prompt: b}\n", "past the end of the audio"),
        ("  - {beat: 0, prompt: a}\n  - {bar: 10, prompt: b}\n", "past the end of the audio"),
        ("  - {beat: 0, prompt: a}\n  - {time: 15.5, prompt: b}\n", "past the end of the video"),
    ],
)
def test_bad_keyframe_positions(keyframes, message):
    tl = timeline(keyframes, end="{time: 15}")
    with pytest.raises(UserError, match=message) as info:
        plan_frames(tl, BEATS, 120.0, 20.0)
    assert "keyframes[1]" in str(info.value)


def test_positions_past_the_last_tracked_beat_continue_at_the_tempo_within_the_audio():
    # the tracker drops a silent tail: "bar 10" of a 40-beat track is the downbeat after its last beat
    tl = timeline("  - {beat: 0, prompt: a}\n  - {beat: 39.5, prompt: b}\n", end="{bar: 10}")
    plan = plan_frames(tl, BEATS, 120.0, 20.5)
    assert plan.keyframes[1].time == pytest.approx(BEATS[39] + 0.25)
    assert plan.n_frames == round((BEATS[39] + 0.5) * 12)
    with pytest.raises(UserError, match="past the end of the audio"):
        plan_frames(tl, BEATS, 120.0, 20.0)


def test_expression_tracks_give_per_frame_values():
    extra = "guidance: 6 + 3 * beat_phase\nnoise_shift: 0.5 * pulse(2, 0.5)\n"
    tl = timeline("  - {frame: 0, prompt: a}\n  - {frame: 12, prompt: b}\n", end="{frame: 24}", extra=extra)
    plan = plan_frames(tl, BEATS, 120.0, None)
    beat = beat_positions(np.arange(24) / 12, BEATS, 120.0)
    np.testing.assert_allclose([r.guidance for r in plan.frames], 6 + 3 * np.mod(beat, 1))
    shift = np.where(np.mod(beat / 2, 1) < 0.5, 0.5, 0.0)
    assert [dict(r.params).get("noise_shift", 0.0) for r in plan.frames] == shift.tolist()
    assert plan.tracks == ("guidance", "noise_shift")
    # zero values are left out of params, so those frames keep today's keys
    assert all(r.params == () for r, s in zip(plan.frames, shift) if s == 0) and any(s == 0 for s in shift)
    assert all(r.params == (("noise_shift", 0.5),) for r, s in zip(plan.frames, shift) if s == 0.5)


def test_keyframe_constant_travels_to_keyframe_expression():
    tl = timeline("  - {frame: 0, prompt: a, noise_shift: 0.2}\n  - {frame: 4, prompt: b, noise_shift: 1 - frame / 8}\n", end="{frame: 6}")
    plan = plan_frames(tl, BEATS, 120.0, None)
    shift = [dict(r.params)["noise_shift"] for r in plan.frames]
    b = 1 - np.arange(6) / 8
    expected = [0.2 + (b[f] - 0.2) * f / 4 for f in range(4)] + [b[4], b[5]]
    np.testing.assert_allclose(shift, expected)


def test_timeline_without_tracks_has_no_params_and_unchanged_guidance():
    tl = timeline("  - {frame: 0, prompt: a, guidance: 2}\n  - {frame: 4, prompt: b, guidance: 10}\n", end="{frame: 6}", extra="noise_shift: 0\n")
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert [r.params for r in plan.frames] == [()] * 6
    assert [r.guidance for r in plan.frames] == [2, 4, 6, 8, 10, 10]


def test_prompt_and_noise_offsets_push_travel_inside_segments_only():
    extra = "prompt_offset: 0.1\nnoise_offset: -0.1\n"
    tl = timeline("  - {frame: 2, prompt: a}\n  - {frame: 6, prompt: b}\n", end="{frame: 9}", extra=extra)
    plan = plan_frames(tl, BEATS, 120.0, None)
    assert [r.t for r in plan.frames] == pytest.approx([0, 0, 0.1, 0.35, 0.6, 0.85, 0, 0, 0])
    assert [r.noise_t for r in plan.frames] == pytest.approx([0, 0, 0, 0.15, 0.4, 0.65, 0, 0, 0])


@pytest.mark.parametrize(
    "extra, message",
    [
        ("guidance: 6 + * low\n", "guidance: unexpected '*' at column 5"),
        ("noise_shift: lwo\n", "noise_shift: unknown variable 'lwo'"),
        ("guidance: true\n", "guidance: expected a number or an expression string"),
    ],
)
def test_bad_track_fields_name_file_line_and_column(extra, message):
    with pytest.raises(UserError, match=re.escape(message)) as info:
        timeline("  - {frame: 0, prompt: a}\n", extra=extra)
    assert str(info.value).startswith("<timeline>:4: ")


def test_keyframe_track_errors_name_the_keyframe_line():
    with pytest.raises(UserError, match=re.escape("<timeline>:6: keyframes[1].guidance: unexpected end of expression at column 4")):
        timeline("  - {frame: 0, prompt: a}\n  - {frame: 4, prompt: b, guidance: '2 +'}\n")


def test_negative_guidance_from_an_expression_is_an_error():
    tl = timeline("  - {frame: 0, prompt: a}\n", end="{frame: 12}", extra="guidance: 3 - frame\n")
    with pytest.raises(UserError, match=r"guidance: must be at least 0, but its expression gives -1 at frame 4"):
        plan_frames(tl, BEATS, 120.0, None)


def test_audio_variables_without_audio_say_why():
    tl = timeline("  - {frame: 0, prompt: a}\n", end="{frame: 12}", extra="noise_shift: onset\n")
    with pytest.raises(UserError, match=r"noise_shift: 'onset' is not available: it needs an audio file"):
        plan_frames(tl, BEATS, 120.0, None)


# --- bounds: every per-frame value, blamed on the field whose value leaves them ------------------


@pytest.mark.parametrize("easing", sorted(EASINGS))
def test_keyframed_values_between_in_range_keyframes_stay_in_range(easing):
    """Every easing maps [0, 1] into [0, 1] (cubic ones too, held and audio-paced alike), so a frame's
    value lies between its two keyframes' values and never overshoots a bound they respect."""
    y = EASINGS[easing](np.linspace(0, 1, 100_001))
    assert y.min() >= 0.0 and y.max() <= 1.0
    keyframes = (
        f"  - {{frame: 0, prompt: a, guidance: 100, easing: {easing}, pacing: audio, pacing_strength: 100}}\n"
        f"  - {{frame: 97, prompt: b, guidance: 0, easing: {easing}}}\n  - {{frame: 190, prompt: c, guidance: 100}}\n"
    )
    energy = np.random.default_rng(0).exponential(size=200) ** 4  # spiky: pacing rushes through loud frames
    plan = plan_frames(timeline(keyframes, end="{frame: 200}"), BEATS, 120.0, None, energy=energy)
    guidance = np.array([r.guidance for r in plan.frames])
    assert guidance.min() >= 0.0 and guidance.max() <= 100.0
    assert all(0.0 <= r.t <= 1.0 for r in plan.frames)


@pytest.mark.parametrize(
    "keyframes, extra, message",
    [
        # a top-level expression: its own line
        ("  - {frame: 0, prompt: a}\n", "guidance: 50 + 1000 * t\n",
         r"^<timeline>:4: guidance: must be at most 100, but its expression gives 133.333 at frame 1 \(0.083s, segment 0\)"),
        # a keyframe's expression, reached at its own frame
        ("  - {frame: 0, prompt: a}\n  - {frame: 4, prompt: b, guidance: 50 + 300 * t}\n", "",
         r"^<timeline>:6: keyframes\[1\].guidance: must be at most 100, but its expression gives 150 at frame 4 \(0.333s, segment 1\)"),
        # ... and while the segment before it travels toward it (frame 3: 7.5 * 0.625 + 500 * 0.375)
        ("  - {frame: 0, prompt: a}\n  - {frame: 8, prompt: b, guidance: 2000 * t}\n", "",
         r"^<timeline>:6: keyframes\[1\].guidance: .* gives 500 at frame 3 \(0.250s, segment 0, which travels toward this value\)"),
        ("  - {frame: 0, prompt: a}\n  - {frame: 4, prompt: b, noise_shift: 1, guidance: 3 - frame}\n", "",
         r"^<timeline>:6: keyframes\[1\].guidance: must be at least 0, but its expression gives -1 at frame 4"),
    ],
)
def test_expression_values_out_of_bounds_name_the_field_line_frame_and_value(keyframes, extra, message):
    with pytest.raises(UserError, match=message):
        plan_frames(timeline(keyframes, end="{frame: 12}", extra=extra), BEATS, 120.0, None)


def test_an_expression_a_keyframe_inherits_is_blamed_on_the_top_level_field():
    tl = timeline("  - {frame: 0, prompt: a, guidance: 5}\n  - {frame: 4, prompt: b}\n", end="{frame: 12}", extra="guidance: frame * 20\n")
    with pytest.raises(UserError, match=r"^<timeline>:4: guidance: must be at most 100, but its expression gives 120 at frame 6"):
        plan_frames(tl, BEATS, 120.0, None)


def test_a_rounding_error_past_a_bound_is_clipped_never_reported():
    from latentwalk.schedule import check_bounds

    tl = timeline("  - {frame: 0, prompt: a}\n", end="{frame: 3}")
    over = np.nextafter(100.0, 200.0)  # one ulp past MAX_GUIDANCE, with both keyframes' values in range
    ends, keys, t = (np.array([100.0, 50.0, 7.5]), np.array([100.0, 100.0, 7.5])), (np.zeros(3, int), np.ones(3, int)), np.array([0.0, 1.0, 0.0])
    values = check_bounds(tl, "guidance", np.array([100.0, over, 7.5]), ends, keys, t, [100.0, 100.0])
    assert values.tolist() == [100.0, 100.0, 7.5]
    same = np.array([1.0, 2.0, 3.0])
    assert check_bounds(tl, "guidance", same, (same, same), keys, t, [1.0, 2.0]) is same  # in range: the very array


def test_lora_weights_are_tracks_of_the_plan_without_changing_frame_params(tmp_path):
    from latentwalk.params import DEFAULT_LORA_WEIGHT
    from latentwalk.schedule import FrameRecord, track_value

    lora = fake_lora(tmp_path / "style.safetensors")
    text = (
        f"fps: 4\nend: {{frame: 6}}\nloras:\n  - {{path: {lora}, weight: 0.5}}\n  - {{path: {lora}, name: plain}}\nkeyframes:\n"
        "  - {frame: 0, prompt: a, loras: {style: 0}}\n  - {frame: 4, prompt: b, guidance: 5}\n"
    )
    plan = plan_frames(parse_timeline(text), BEATS, 120.0, None)
    assert plan.tracks == ("guidance", "lora:style", "lora:plain")  # the timeline's tracks, then its LoRAs in order
    assert [track_value(r, "lora:style") for r in plan.frames] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    assert {track_value(r, "lora:plain") for r in plan.frames} == {DEFAULT_LORA_WEIGHT}
    # The params carry exactly the LoRA weights (sorted by name), as frame keys always had them.
    assert plan.frames[1].params == (("lora:plain", 1.0), ("lora:style", 0.125))
    bare = FrameRecord(0, 0.0, 0.0, 0, 0, 0.0, 0.0, 0, 0, 7.5)  # a record made by hand: no params
    assert track_value(bare, "lora:style", parse_timeline(text).settings.loras) == 0.5
    assert track_value(bare, "lora:other") == DEFAULT_LORA_WEIGHT and track_value(bare, "zoom") == 1.0


def fake_lora(path):
    """A .safetensors file with one LoRA-named tensor: enough for the timeline, which reads only its header."""
    import json
    import struct

    header = json.dumps({"unet.down.lora_A.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return path
