"""Hostile input, third round: values past their bounds, files that only fail once the model loads,
and messages that blamed the wrong field.

Every case goes through the CLI (`main([...])` returns the exit status) and checks exit status 2,
the `file:line: field:` of the field that is wrong, no traceback and no "internal error", no video,
and that every file that existed before (the timeline, the LRC, the audio, the models and adapter
files) is byte-identical afterwards.
"""

import hashlib
import json
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_layout import write_sd_checkpoint
from latentwalk.cli import main
from test_adapters import make_lora, write_embedding


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under `folders`, by path."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def write_silence(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(np.zeros(int(22050 * seconds), np.int16).tobytes())
    return path


@pytest.fixture(scope="module")
def assets(tiny_model_dir, tiny_sdxl_dir, tmp_path_factory) -> dict[str, Path]:
    """Every file the cases point at, made once: adapters, foreign folders, a checkpoint, silence."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    files = {"sd": tiny_model_dir, "xl": tiny_sdxl_dir, "root": root}
    files["sd_lora"] = make_lora(tiny_model_dir, root / "sd_lora.safetensors", seed=5)
    files["xl_lora"] = make_lora(tiny_sdxl_dir, root / "xl_lora.safetensors", seed=5)
    files["dotted_lora"] = root / "style.v2.safetensors"
    shutil.copy(files["sd_lora"], files["dotted_lora"])
    # kohya's names, but only the down half of a layer: diffusers fails on a bare KeyError
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.randn(4, 16)}, root / "half.safetensors")
    files["half_lora"] = root / "half.safetensors"
    files["sd_embedding"] = write_embedding(root / "look.safetensors", {"emb_params": torch.randn(1, 32)})
    files["wide_embedding"] = write_embedding(root / "wide.safetensors", {"emb_params": torch.randn(1, 99)})
    torch.save([1, 2, 3], root / "list.pt")
    files["list_embedding"] = root / "list.pt"
    files["unet_vae"] = root / "unet-as-vae"
    shutil.copytree(tiny_model_dir / "unet", files["unet_vae"])
    files["empty_vae"] = root / "vae-without-weights"
    files["empty_vae"].mkdir()
    shutil.copy(tiny_model_dir / "vae" / "config.json", files["empty_vae"])
    files["listed_model"] = root / "listed-model"
    files["listed_model"].mkdir()
    (files["listed_model"] / "model_index.json").write_text(json.dumps({"_class_name": ["StableDiffusionPipeline"]}))
    files["checkpoint"] = write_sd_checkpoint(tiny_model_dir, root / "tiny.safetensors")
    files["silence"] = write_silence(root / "silence.wav", 4.0)
    return files


def render_timeline(model: str, extra: str) -> str:
    """A two-frame render on a tiny model; `extra` starts on line 9."""
    return (
        f"model: {model}\nwidth: 32\nheight: 32\nfps: 4\nsteps: 2\nbatch_size: 2\ndevice: cpu\nspacing: t\n{extra}"
        "end: {frame: 2}\nkeyframes:\n  - {frame: 0, prompt: a cat, seed: 1}\n"
    )


def plan_timeline(extra: str, second: str = "{frame: 8, prompt: b}") -> str:
    """Twelve frames at 4 fps, keyframes on frames 0 and 8 (line 5); `extra` starts on line 3."""
    return f"fps: 4\nend: {{frame: 12}}\n{extra}keyframes:\n  - {{frame: 0, prompt: a}}\n  - {second}\n"


LRC = "[00:01.00]one\n[00:02.00]two\n"


def lyrics_timeline(extra: str, audio: str = "audio: {bpm: 120}\nend: {time: 4}\n") -> str:
    """Lyrics only, from song.lrc (LRC); `extra` starts on line 5 with the default audio."""
    return f"fps: 4\n{audio}lyrics: song.lrc\n{extra}"


# (id, command, timeline text ({name}: an asset's path), a regex the message must match)
CASES = [
    # 3. per-frame values against TRACK_BOUNDS, constants when read, expressions per frame, with the line
    ("expression-past-max", "plan", plan_timeline("guidance: 50 + 1000 * t\n"),
     r"t\.yaml:3: guidance: must be at most 100, but its expression gives 300 at frame 1 \(0\.250s, segment 0\)"),
    ("constant-past-max", "plan", plan_timeline("guidance: 1000\n"), r"t\.yaml:3: guidance: must be at most 100, got 1000"),
    ("keyframe-constant", "plan", plan_timeline("", "{frame: 8, prompt: b, guidance: 500}"),
     r"t\.yaml:5: keyframes\[1\]\.guidance: must be at most 100, got 500"),
    ("travel-toward-expression", "plan", plan_timeline("", "{frame: 8, prompt: b, guidance: 25 * frame}"),
     r"t\.yaml:5: keyframes\[1\]\.guidance: must be at most 100, but its expression gives 150 at frame 6 \(1\.500s, segment 0, "
     r"which travels toward this value\)"),
    ("expression-below-min", "plan", plan_timeline("guidance: 3 - frame\n"),
     r"t\.yaml:3: guidance: must be at least 0, but its expression gives -1 at frame 4"),
    ("strength-expression", "plan", plan_timeline("mode: feedback\nstrength: 0.5 + t\n"),
     r"t\.yaml:4: strength: must be at most 1, but its expression gives 1\.25 at frame 3"),
    ("zoom-expression", "plan", plan_timeline("mode: feedback\n", "{frame: 8, prompt: b, zoom: 1 - frame / 10}"),
     r"t\.yaml:6: keyframes\[1\]\.zoom: must be greater than 0, but its expression gives 0 at frame 10"),
    ("lyrics-override-constant", "plan", lyrics_timeline("lyrics_overrides:\n  2: {prompt: a dog, guidance: 200}\n"),
     r"^latentwalk: error: \S*t\.yaml:6: lyrics_overrides\[2\]\.guidance: must be at most 100, got 200"),
    ("lyrics-override-expression", "plan", lyrics_timeline("lyrics_overrides:\n  two: {prompt: a dog, guidance: 100 + t}\n"),
     r"^latentwalk: error: \S*t\.yaml:6: lyrics_overrides\.two\.guidance: must be at most 100, but its expression gives 102 at frame 8"),
    # 5, 6. errors found when the model loads, mapped to the field's file and line
    ("vae-holds-a-unet", "render", render_timeline("{sd}", "vae: {unet_vae}\n"),
     r"t\.yaml:9: vae: '.*unet-as-vae' is not a VAE: its config\.json describes a UNet2DConditionModel, not an AutoencoderKL"),
    ("vae-without-weights", "render", render_timeline("{sd}", "vae: {empty_vae}\n"), r"t\.yaml:9: vae: cannot load the VAE in '.*vae-without-weights'"),
    ("lora-is-an-embedding", "render", render_timeline("{sd}", "loras:\n  - {path: {sd_embedding}}\n"),
     r"t\.yaml:10: loras\[0\]\.path: '.*look\.safetensors' is not a LoRA: none of its 1 tensors is a LoRA layer \(found 'emb_params'\)"),
    ("lora-of-sdxl-on-sd", "render", render_timeline("{sd}", "loras:\n  - {path: {xl_lora}}\n"),
     r"t\.yaml:10: loras\[0\]\.path: '.*xl_lora\.safetensors' does not fit this SD 1\.x/2\.x model \(StableDiffusionPipeline\): "
     r"its layers have other sizes"),
    ("lora-of-sd-on-sdxl", "render", render_timeline("{xl}", "loras:\n  - {path: {sd_lora}}\n"),
     r"t\.yaml:10: loras\[0\]\.path: '.*sd_lora\.safetensors' does not fit this SDXL model"),
    ("lora-half-a-layer", "render", render_timeline("{sd}", "loras:\n  - {path: {half_lora}}\n"),
     r"t\.yaml:10: loras\[0\]\.path: cannot load '.*half\.safetensors' into this SD 1\.x/2\.x model \(StableDiffusionPipeline\): "
     r"its layout is not one diffusers reads \(KeyError: "),
    ("lora-name-with-a-dot", "render", render_timeline("{sd}", "loras:\n  - {path: {dotted_lora}}\n"),
     r"t\.yaml:10: loras\[0\]\.name: 'style\.v2' is not a usable name"),
    ("embedding-token-is-a-word", "render", render_timeline("{sd}", "embeddings:\n  - {path: {sd_embedding}, token: cat}\n"),
     r"t\.yaml:10: embeddings\[0\]\.token: 'cat' is already a word of this model's tokenizer"),
    ("embedding-too-wide", "render", render_timeline("{sd}", "embeddings:\n  - {path: {wide_embedding}, token: '<w>'}\n"),
     r"t\.yaml:10: embeddings\[0\]\.path: '.*wide\.safetensors' holds vectors 99 wide, but the text encoder of this SD 1\.x/2\.x model"),
    ("embedding-is-a-list", "render", render_timeline("{sd}", "embeddings:\n  - {path: {list_embedding}, token: '<l>'}\n"),
     r"t\.yaml:10: embeddings\[0\]\.path: '.*list\.pt' is not a textual-inversion embedding: it holds list"),
    ("sd-embedding-on-sdxl", "render", render_timeline("{xl}", "embeddings:\n  - {path: {sd_embedding}, token: '<l>'}\n"),
     r"t\.yaml:10: embeddings\[0\]\.path: '.*look\.safetensors' is not an SDXL embedding"),
    ("model-config-of-another-family", "render", render_timeline("{checkpoint}", "model_config: {xl}\n"),
     r"t\.yaml:9: model_config: '.*' is an SDXL model, but the checkpoint '.*tiny\.safetensors' is an SD 1\.x/2\.x one"),
    ("model-index-names-a-list", "render", render_timeline("{listed_model}", ""),
     r"t\.yaml:1: model: '.*model_index\.json' names no pipeline class"),
    # 7. messages that pointed at the wrong thing
    ("lyrics-all-after-the-clip", "plan", lyrics_timeline("", "audio: {path: {silence}, end: 1}\n"),
     r"t\.yaml:3: lyrics: none of the 2 sung lines of song\.lrc \(1\.000s to 2\.000s into the audio\) falls inside the audio clip"),
    ("lyrics-all-after-the-video", "plan", lyrics_timeline("", "audio: {bpm: 120}\nend: {time: 0.5}\n"),
     r"t\.yaml:4: lyrics: every sung line falls after the end of the video \(0\.500s; the first, song\.lrc:1, at 1\.000s\)"),
    ("lyrics-override-bad-expression", "plan", lyrics_timeline("lyrics_overrides:\n  2: {prompt: a dog, guidance: '2 +'}\n"),
     r"^latentwalk: error: \S*t\.yaml:6: lyrics_overrides\[2\]\.guidance: unexpected end of expression"),
    ("lyrics-override-bad-prompt", "plan", lyrics_timeline("lyrics_overrides:\n  two: '\"a\" +'\n"),
     r"^latentwalk: error: \S*t\.yaml:6: lyrics_overrides\.two\.prompt: unexpected end of expression"),
    ("lyrics-template-bad", "plan", lyrics_timeline("lyrics_template: '(\"{line}\" +'\n"),
     r"^latentwalk: error: \S*t\.yaml:5: lyrics_template \(filled with song\.lrc:1\): unexpected end of expression"),
    ("lyrics-snap-without-a-grid", "plan", lyrics_timeline("lyrics_snap: bar\n", "end: {time: 4}\n"),
     r"t\.yaml:4: lyrics_snap: bar needs a beat grid"),
    ("silence-with-beat-keyframes", "plan", "audio: {silence}\nfps: 4\nkeyframes:\n  - {time: 0, prompt: a}\n  - {beat: 2, prompt: b}\n",
     r"t\.yaml:5: keyframes\[1\]\.beat: no beats were found in the audio"),
    ("fps-too-low-for-the-clip", "plan", "audio: {path: {silence}, end: 3}\nfps: 0.1\nkeyframes:\n  - {time: 0, prompt: a}\n",
     r"t\.yaml:2: fps: 0\.1 fps gives the audio clip \(3\.000s\) no frame at all; it needs at least 0\.333 fps"),
    ("fps-too-low-for-the-end", "plan", "fps: 0.1\nend: {time: 2}\nkeyframes:\n  - {time: 0, prompt: a}\n",
     r"t\.yaml:1: fps: 0\.1 fps gives a video ending at time 2 \(2\.000s\) no frame at all"),
]


@pytest.mark.parametrize("command, text, needle", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_input_exits_2_naming_the_field_and_line(assets, tmp_path, capsys, command, text, needle):
    timeline = tmp_path / "t.yaml"
    text = re.sub(r"\{(\w+)\}", lambda m: str(assets[m.group(1)]) if m.group(1) in assets else m.group(0), text)  # asset paths
    timeline.write_text(text)
    (tmp_path / "song.lrc").write_text(LRC)
    before = snapshot(tmp_path, assets["root"], assets["sd"], assets["xl"])
    out = tmp_path / "out.mp4"
    status = main([command, str(timeline)] + (["--out", str(out), "--quiet"] if command == "render" else []))
    err = capsys.readouterr().err
    assert status == 2, err
    assert re.search(needle, err, re.MULTILINE), err
    assert "Traceback" not in err and "internal error" not in err
    assert err.count("latentwalk: error:") == 1 and "song.lrc:2: lyrics:" not in err
    after = snapshot(tmp_path, assets["root"], assets["sd"], assets["xl"])
    assert {path: after.get(path) for path in before} == before  # nothing that existed was changed or removed
    assert not out.exists()


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({case[0] for case in CASES}) == len(CASES)
