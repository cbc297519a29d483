"""Per-frame inputs and the frame key: every input counts, a frame's position does not."""

import dataclasses
import hashlib
import json
import os

from latentwalk.frames import KEY_VERSION, ControlInput, FrameInputs, ImageSide, RenderIdentity, frame_key, timeline_frames
from latentwalk.modelspec import file_fingerprint
from latentwalk.schedule import FrameRecord
from latentwalk.timeline import Keyframe, Position

SEGMENT = ("linear", "linear", 0.0, "uniform", 0.5, 1)  # easing, noise_easing, hold, pacing, strength, line

IDENTITY = RenderIdentity(
    model="/models/sd",
    model_fingerprint="f" * 64,
    width=64,
    height=48,
    family="sd",
    scheduler="ddim",
    timestep_spacing="auto",
    interpolation="slerp",
    dtype="torch.float32",
    device_type="cpu",
    cpu_threads=2,
    batch_size=4,
    options=(("channels_last", False), ("compile", False), ("attention_slicing", False), ("vae_tiling", False)),
    adapters=(),
    versions=(("diffusers", "0.42.1"), ("torch", "2.13.0")),
)
INPUTS = FrameInputs(
    seed_a=1, seed_b=2, noise_t=0.25, prompt_a='"a cat"', prompt_b='"a dog"', negative_a='""', negative_b='"blur"', t=0.5, guidance=7.5,
    steps=20,
)
CHANGED = {
    "model": "/models/other",
    "model_fingerprint": "e" * 64,
    "width": 72,
    "height": 64,
    "family": "sdxl",
    "scheduler": "euler",
    "timestep_spacing": "trailing",
    "interpolation": "lerp",
    "dtype": "torch.float16",
    "device_type": "cuda",
    "cpu_threads": 1,
    "batch_size": 8,
    "options": (("channels_last", True), ("compile", False), ("attention_slicing", False), ("vae_tiling", False)),
    "adapters": (("lora:style", "ab" * 32),),
    "versions": (("diffusers", "0.43.0"), ("torch", "2.13.0")),
    "seed_a": 3,
    "seed_b": 4,
    "noise_t": 0.25000000000000006,  # one ulp away
    "prompt_a": '"a kitten"',
    "prompt_b": '0.5 * "a dog" + 0.5 * "a cat"',
    "negative_a": '"ugly"',
    "negative_b": '""',
    "t": 0.5000000000000001,
    "guidance": 7.0,
    "steps": 21,
    "strength": 0.5,
    "init": "cd" * 32,
    "params": (("noise_shift", 0.1),),
    "share": (0.25, 0.75, 10),
    "image_a": ImageSide("ab" * 32, 1, '"a kitten"', '""', 7.0),
    "image_b": ImageSide("ef" * 32, 2, '""', '""', 7.5),
    "controls": (ControlInput("edges", "12" * 32, "image:" + "34" * 32 + ":0+canny", 0.8, 0.0, 1.0),),
}
def test_every_input_changes_the_key():
    base = frame_key(IDENTITY, INPUTS)
    assert base == frame_key(dataclasses.replace(IDENTITY), dataclasses.replace(INPUTS))
    assert len(base) == 64
    fields = [f.name for f in dataclasses.fields(RenderIdentity)] + [f.name for f in dataclasses.fields(FrameInputs)]
    assert sorted(fields) == sorted(CHANGED)
    keys = {base}
    for name, value in CHANGED.items():
        identity, inputs = IDENTITY, INPUTS
        if name in {f.name for f in dataclasses.fields(RenderIdentity)}:
            identity = dataclasses.replace(IDENTITY, **{name: value})
        else:
            inputs = dataclasses.replace(INPUTS, **{name: value})
        keys.add(frame_key(identity, inputs))
    assert len(keys) == 1 + len(CHANGED)


# Fields added after frame keys were first stored; left out of the key while unset (None or empty).
LATER_FIELDS = ("share", "image_a", "image_b", "controls")


def test_frames_denoised_from_scratch_keep_their_keys_from_before_sharing():
    # Frames with no shared trajectory hash exactly as before the `share` field existed.
    payload = {"version": KEY_VERSION, "render": dataclasses.asdict(IDENTITY),
               "frame": {k: v for k, v in dataclasses.asdict(INPUTS).items() if k not in LATER_FIELDS}}
    assert frame_key(IDENTITY, INPUTS) == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def test_frame_position_does_not_change_the_key():
    # A frame's index, time and beat do not reach the model: equal inputs share one image.
    a = FrameRecord(frame=3, time=0.3, beat=0.6, segment=0, target=1, t=0.5, noise_t=0.25, seed_a=1, seed_b=2, guidance=7.5)
    b = dataclasses.replace(a, frame=30, time=3.0, beat=6.0)
    keyframes = [Keyframe("a cat", 1, Position("frame", 0), None, None, *SEGMENT), Keyframe("a dog", 2, Position("frame", 9), "blur", None, *SEGMENT)]
    first, second = timeline_frames([a, b], keyframes, "", steps=20)
    assert first == second == INPUTS
    c = dataclasses.replace(a, segment=1, target=1)  # after the last keyframe: both ends are keyframe 1
    (held,) = timeline_frames([c], keyframes, "", steps=20)
    assert held.prompt_a == held.prompt_b == '"a dog"'


def test_model_fingerprint_follows_configs_and_weights(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    weights = tmp_path / "unet" / "weights.bin"
    weights.write_bytes(b"\0" * (2 << 20))
    first = file_fingerprint(str(tmp_path))
    assert first == file_fingerprint(str(tmp_path))
    (tmp_path / "model_index.json").write_text('{"x": 1}')
    second = file_fingerprint(str(tmp_path))
    os.utime(weights, ns=(1, 1))  # a retrained model: same size, new mtime
    third = file_fingerprint(str(tmp_path))
    assert len({first, second, third}) == 3
    assert file_fingerprint("owner/hub-model") == ""


