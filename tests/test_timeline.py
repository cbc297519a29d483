import pytest

from latentwalk.errors import UserError
from latentwalk.timeline import load_timeline, parse_timeline

GOOD = """\
fps: 12
audio: {bpm: 120}
end: {bar: 4}
keyframes:
  - bar: 0
    prompt: a day over the sea
    seed: 3
  - bar: 2
    prompt: a night over the sea
"""


def test_good_timeline_defaults():
    tl = parse_timeline(GOOD)
    assert tl.settings.model == "toy" and tl.settings.scheduler == "ddim"
    assert [k.seed for k in tl.keyframes] == [3, 3]  # a keyframe without a seed keeps the previous one
    assert [k.position.unit for k in tl.keyframes] == ["bar", "bar"]
    assert tl.keyframes[1].line == 8


@pytest.mark.parametrize(
    "yaml_text, field, line",
    [
        ("fsp: 12\n" + GOOD, "fsp", 1),  # unknown key
        (GOOD.replace("    seed: 3", "    seed: 3\n    sede: 4"), "keyframes[0].sede", 8),
        (GOOD.replace("fps: 12", "fps: twelve"), "fps", 1),
        (GOOD.replace("fps: 12", "fps: -1"), "fps", 1),
        (GOOD.replace("seed: 3", "seed: 1.5"), "keyframes[0].seed", 7),
        (GOOD.replace("  - bar: 2\n", "  - time: 2\n    bar: 2\n"), "keyframes[1]", 8),
        (GOOD.replace("  - bar: 2\n", "  - \n"), "keyframes[1]", 9),
        (GOOD.replace("    prompt: a night over the sea\n", ""), "keyframes[1]", 8),
        ("fps: 12\nscheduler: heun\n" + GOOD[8:], "scheduler", 2),
        ("width: 100\n" + GOOD, "width", 1),
        ("model: nonexistent_model_name\n" + GOOD, "model", 1),
        (GOOD.replace("audio: {bpm: 120}", "audio: {path: missing.wav}"), "audio.path", 2),
        (GOOD.replace("    seed: 3", "    seed: 3\n    easing: bouncy"), "keyframes[0].easing", 8),
        (GOOD.replace("    seed: 3", "    seed: 3\n    hold: 1.5"), "keyframes[0].hold", 8),
        (GOOD.replace("a night over the sea", "'\"a\" + (0.5 * \"b\"'"), "keyframes[1].prompt", 9),
        ("fps: 12\nkeyframes:\n  - {time: 0, prompt: a}\n", "end", 1),  # no audio, no end
        ("fps: 12\nend: {time: 4}\n", "keyframes", 1),
    ],
)
def test_bad_input_names_field_and_line(yaml_text, field, line):
    with pytest.raises(UserError) as info:
        parse_timeline(yaml_text, source="t.yaml")
    message = str(info.value)
    assert field in message
    assert message.startswith(f"t.yaml:{line}:"), message


def test_invalid_yaml_reports_line():
    with pytest.raises(UserError, match=r"t.yaml:4: invalid YAML"):
        parse_timeline("fps: 12\nkeyframes:\n  - {prompt: a\n", source="t.yaml")


def test_audio_path_is_relative_to_the_timeline(tmp_path):
    (tmp_path / "song.wav").write_bytes(b"RIFF")
    (tmp_path / "t.yaml").write_text("audio: song.wav\nkeyframes:\n  - {time: 0, prompt: a}\n")
    tl = load_timeline(tmp_path / "t.yaml")
    assert tl.audio.path == tmp_path / "song.wav"
    assert tl.end is None  # end of the audio


def test_missing_timeline_file(tmp_path):
    with pytest.raises(UserError, match="cannot read timeline"):
        load_timeline(tmp_path / "nope.yaml")


def safetensors_file(path, names):
    """A .safetensors file holding one-float tensors named `names` (the timeline reads only headers)."""
    import json
    import struct

    header = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in enumerate(names)}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4 * len(names))
    return path


def test_a_lora_without_a_weight_gets_the_one_default(tmp_path):
    from latentwalk.params import DEFAULT_LORA_WEIGHT

    safetensors_file(tmp_path / "style.safetensors", ["unet.a.lora_A.weight", "unet.a.lora_B.weight"])
    tl = parse_timeline("end: {time: 1}\nloras: [style.safetensors]\nkeyframes:\n  - {time: 0, prompt: a}\n", "t.yaml", tmp_path)
    assert tl.settings.loras[0].weight == DEFAULT_LORA_WEIGHT


@pytest.mark.parametrize(
    "names, file, field, message",
    [
        (["emb_params"], "look.safetensors", "t.yaml:3: loras[0].path", "is not a LoRA: none of its 1 tensors is a LoRA layer (found 'emb_params')"),
        (["unet.a.lora_A.weight"], "style.v2.safetensors", "t.yaml:3: loras[0].name", "'style.v2' is not a usable name"),
    ],
)
def test_lora_files_that_cannot_load_fail_when_read(tmp_path, names, file, field, message):
    safetensors_file(tmp_path / file, names)
    with pytest.raises(UserError) as info:
        parse_timeline(f"end: {{time: 1}}\nloras:\n  - {{path: {file}}}\nkeyframes:\n  - {{time: 0, prompt: a}}\n", "t.yaml", tmp_path)
    assert str(info.value).startswith(f"{field}: ") and message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "config, message",
    [
        ('{"_class_name": "UNet2DConditionModel"}', "is not a VAE: its config.json describes a UNet2DConditionModel, not an AutoencoderKL"),
        ('[1, 2]', "is not a VAE: its config.json describes no diffusers model"),
        ('{"_class_name": "AutoencoderKL"', "cannot read"),
    ],
)
def test_a_vae_folder_of_something_else_fails_when_read(tmp_path, config, message):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(config)
    with pytest.raises(UserError) as info:
        parse_timeline(f"end: {{time: 1}}\nvae: {tmp_path / 'vae'}\nkeyframes:\n  - {{time: 0, prompt: a}}\n", "t.yaml", tmp_path)
    assert str(info.value).startswith("t.yaml:2: vae: ") and message in str(info.value), str(info.value)
