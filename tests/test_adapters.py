"""LoRAs (weights per frame, travelling between keyframes) and textual-inversion embeddings."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_SIZE
from latentwalk.api import frame_plan, plan, render
from latentwalk.backends import ModelSpec, load_backend
from latentwalk.cli import main
from latentwalk.engine import EngineSettings, denoised_batches, render_frames
from latentwalk.errors import UserError
from latentwalk.frames import FrameInputs
from latentwalk.prompts import parse_prompt
from latentwalk.store import FrameStore
from latentwalk.sweep import run_sweep
from latentwalk.timeline import EmbeddingSpec, LoraSpec, parse_timeline

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def make_lora(model_dir: Path, out: Path, seed: int, *, text_encoder: bool = False, std: float = 0.3) -> Path:
    """A random rank-4 LoRA on the UNet's attention (and optionally the text encoder), saved as diffusers does."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    xl = json.loads((model_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    pipeline = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    pipe = pipeline.from_pretrained(model_dir)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=ATTENTION))
    layers = {"unet_lora_layers": pipe.unet}
    if text_encoder:
        pipe.text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["q_proj", "v_proj"]))
        layers["text_encoder_lora_layers"] = pipe.text_encoder
    for module in layers.values():
        for name, parameter in module.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (a no-op LoRA); make it do something
                parameter.data.normal_(0, std)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {key: convert_state_dict_to_diffusers(get_peft_model_state_dict(module)) for key, module in layers.items()}
    pipeline.save_lora_weights(out.parent, weight_name=out.name, **state)
    return out


@pytest.fixture(scope="module")
def lora_file(tiny_model_dir, tmp_path_factory) -> Path:
    return make_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "style.safetensors", seed=5)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return load_backend(ModelSpec(str(tiny_model_dir)), device="cpu")


@pytest.fixture(scope="module")
def styled(tiny_model_dir, lora_file):
    return load_backend(ModelSpec(str(tiny_model_dir), loras=(LoraSpec("style", str(lora_file), 1.0),)), device="cpu")


def frame(prompt: str = "a cat in the snow", seed: int = 3, guidance: float = 5.0, steps: int = 3, style: float | None = None) -> FrameInputs:
    text, negative = str(parse_prompt(prompt)), str(parse_prompt(""))
    params = () if style is None else (("lora:style", float(style)),)
    return FrameInputs(seed, seed, 0.0, text, text, negative, negative, 0.0, guidance, steps, params=params)


def render_all(backend, frames, batch_size=4, scheduler="ddim") -> np.ndarray:
    out = {}
    settings = EngineSettings(TINY_SIZE, TINY_SIZE, scheduler, "auto", "slerp", batch_size)
    render_frames(backend, list(dict.fromkeys(frames)), settings, lambda fs, images: out.update(zip(fs, images)))
    return np.stack([out[f] for f in frames]).astype(np.int64)


# --- LoRA weights per frame ----------------------------------------------------------------------


def test_lora_weight_zero_is_the_base_model_and_distance_grows_with_weight(base, styled):
    weights = (0.0, 0.25, 0.5, 1.0, 2.0)
    frames = [frame(style=w) for w in weights]
    plain = render_all(base, [frame()])[0]
    styled_frames = render_all(styled, frames, batch_size=5)  # every weight in one batch
    np.testing.assert_array_equal(styled_frames[0], plain)  # weight 0 adds exactly nothing
    distance = [np.abs(f - plain).mean() for f in styled_frames]
    assert distance[1] > 0.5, distance  # the LoRA does something visible at a quarter weight
    assert all(a < b for a, b in zip(distance, distance[1:])), distance


def test_a_frame_without_a_weight_uses_the_top_level_weight(styled):
    with_param, without = render_all(styled, [frame(style=1.0), frame()])
    np.testing.assert_array_equal(with_param, without)


def denoised(backend, frames, batch_size) -> torch.Tensor:
    """(n, C, h, w) latents of the frames, before decoding (padding rows dropped)."""
    settings = EngineSettings(TINY_SIZE, TINY_SIZE, "ddim", "auto", "slerp", batch_size)
    return torch.cat([item.latents[: len(item.frames)] for item in denoised_batches(backend, frames, settings)])


def test_travelling_weights_in_one_batch_equal_one_frame_per_batch(styled):
    """Rows of one UNet call carry different weights (with CFG, twice); no row sees another's."""
    frames = [frame(style=w, seed=s, guidance=g) for w, s, g in ((0.1, 1, 5.0), (0.4, 2, 5.0), (0.7, 1, 7.0), (1.3, 3, 5.0))]
    together = denoised(styled, frames, batch_size=4)
    assert torch.equal(together, torch.cat([denoised(styled, [f], batch_size=4) for f in frames]))  # bit for bit
    unguided = [frame(style=w, guidance=1.0) for w in (0.2, 0.9)]  # no unconditional half: rows = frames
    assert torch.equal(denoised(styled, unguided, 2), torch.cat([denoised(styled, [f], 2) for f in unguided]))
    pixels = render_all(styled, frames, batch_size=4)  # and through the decoder (a padded batch), as the store sees them
    np.testing.assert_array_equal(pixels, np.concatenate([render_all(styled, [f], batch_size=4) for f in frames]))


def test_text_encoder_layers_run_at_the_top_level_weight(tiny_model_dir, base, tmp_path):
    lora = make_lora(tiny_model_dir, tmp_path / "te.safetensors", seed=6, text_encoder=True)
    prompt = parse_prompt("a cat in the snow")
    off = load_backend(ModelSpec(str(tiny_model_dir), loras=(LoraSpec("te", str(lora), 0.0),)), device="cpu")
    on = load_backend(ModelSpec(str(tiny_model_dir), loras=(LoraSpec("te", str(lora), 1.0),)), device="cpu")
    assert torch.equal(off.encode(prompt)["embeds"], base.encode(prompt)["embeds"])
    assert (on.encode(prompt)["embeds"] - base.encode(prompt)["embeds"]).abs().max() > 1e-3


def test_sdxl_takes_a_lora_per_row(tiny_sdxl_dir, tmp_path):
    lora = make_lora(tiny_sdxl_dir, tmp_path / "xl.safetensors", seed=7, std=0.5)
    xl = load_backend(ModelSpec(str(tiny_sdxl_dir), loras=(LoraSpec("style", str(lora), 1.0),)), device="cpu")
    frames = [frame(style=w, steps=2) for w in (0.0, 1.0)]
    off_on = render_all(xl, frames, batch_size=2, scheduler="euler")
    plain = render_all(load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cpu"), [frame(steps=2)], batch_size=2, scheduler="euler")[0]
    np.testing.assert_array_equal(off_on[0], plain)
    assert np.abs(off_on[1] - plain).mean() > 0.5


# --- timelines: parsing, travel, the frame key -------------------------------------------------


def lora_timeline(lora: Path, weights: tuple[float, float, float], model: Path, extra: str = "") -> str:
    return (
        f"model: {model}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nfps: 6\nsteps: 2\nguidance: 5\nbatch_size: 4\ndevice: cpu\nspacing: t\n"
        f"loras:\n  - {{path: {lora.name}, weight: 0.5}}\n{extra}end: {{frame: 12}}\nkeyframes:\n"
        f"  - {{frame: 0, prompt: a cat in the snow, seed: 3, loras: {{{lora.stem}: {weights[0]}}}}}\n"
        f"  - {{frame: 4, prompt: a dog at night, seed: 4, loras: {{{lora.stem}: {weights[1]}}}, easing: smoothstep}}\n"
        f"  - {{frame: 8, prompt: a dog at night, seed: 4, loras: {{{lora.stem}: {weights[2]}}}}}\n"
    )


def test_lora_weight_travels_between_keyframes_with_the_easing(lora_file, tiny_model_dir):
    timeline = parse_timeline(lora_timeline(lora_file, (0.0, 1.0, 0.25), tiny_model_dir), "t.yaml", lora_file.parent)
    assert timeline.settings.loras == (LoraSpec("style", str(lora_file), 0.5),)
    assert [k.loras for k in timeline.keyframes] == [(("style", 0.0),), (("style", 1.0),), (("style", 0.25),)]
    records = plan(timeline).frames
    weights = [dict(r.params)["lora:style"] for r in records]
    assert weights[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]  # linear segment: exactly the keyframes' weights at its ends
    u = np.arange(4) / 4
    np.testing.assert_allclose(weights[4:8], 1.0 + (0.25 - 1.0) * (u * u * (3 - 2 * u)), rtol=0, atol=1e-15)  # smoothstep
    assert weights[8:] == [0.25] * 4  # the last keyframe holds
    assert [r.guidance for r in records] == [5.0] * 12  # guidance travels as before


def test_keyframes_without_a_weight_use_the_top_level_weight(lora_file, tiny_model_dir):
    text = lora_timeline(lora_file, (0.0, 1.0, 0.25), tiny_model_dir).replace(", loras: {style: 1.0}", "")
    weights = [dict(r.params)["lora:style"] for r in plan(parse_timeline(text, "t.yaml", lora_file.parent)).frames]
    assert weights[4] == 0.5 and weights[2] == 0.25


def test_lora_weights_are_columns_of_plan_and_tracks_of_plan_json(lora_file, tiny_model_dir, capsys):
    path = lora_file.parent / "plan.yaml"
    path.write_text(lora_timeline(lora_file, (0.0, 1.0, 0.25), tiny_model_dir))
    weights = [dict(r.params)["lora:style"] for r in plan(parse_timeline(path.read_text(), str(path), lora_file.parent)).frames]
    assert main(["plan", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["frame"])
    assert header.split()[-1] == "lora:style"  # one column per LoRA, after the timeline's own tracks
    rows = [line.split() for line in lines if line.split()[:1] and line.split()[0].isdigit() and "frames at" not in line]
    assert [float(row[header.split().index("lora:style")]) for row in rows] == [round(w, 3) for w in weights]
    assert main(["plan", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tracks"] == ["guidance", "lora:style"]
    assert [f["lora:style"] for f in data["frames"]] == weights and weights[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("path: style.safetensors", "path: nope.safetensors"), "t.yaml:11: loras[0].path: file not found"),
        (lambda t: t.replace("path: style.safetensors", "path: corrupt.safetensors"), "t.yaml:11: loras[0].path: cannot read"),
        (lambda t: t.replace("path: style.safetensors", "path: style.ckpt"), "expected a .safetensors file"),
        (lambda t: t.replace("{style: 1.0}", "{styel: 1.0}"), "t.yaml:15: keyframes[1].loras.styel: unknown key 'styel' (did you mean 'style'?)"),
        (lambda t: t.replace("{style: 1.0}", "{style: high}"), "keyframes[1].loras.style: expected a number, got 'high'"),
        (lambda t: t.replace("weight: 0.5}", "weight: 0.5}\n  - {path: style.safetensors}"), "loras[1]: a second LoRA named 'style'"),
        (lambda t: t.replace("weight: 0.5}", "weight: 0.5, name: 'a b'}"), "loras[0].name: 'a b' is not a usable name"),
    ],
)
def test_lora_mistakes_fail_before_any_work_with_the_line(lora_file, tiny_model_dir, edit, message):
    (lora_file.parent / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match=None) as error:
        parse_timeline(edit(lora_timeline(lora_file, (0.0, 1.0, 0.25), tiny_model_dir)), "t.yaml", lora_file.parent)
    assert message in str(error.value), str(error.value)


def test_changing_a_weight_or_the_file_rerenders_exactly_the_affected_frames(lora_file, tiny_model_dir, tmp_path):
    """Keyframes at 0, 4, 8: keyframe 1's weight reaches frames 1-7 only (frame 0 is keyframe 0's own)."""
    folder = tmp_path / "t"
    folder.mkdir()
    lora = folder / "style.safetensors"
    lora.write_bytes(lora_file.read_bytes())
    path = folder / "t.yaml"
    path.write_text(lora_timeline(lora, (0.0, 1.0, 0.25), tiny_model_dir))
    result = render(path, tmp_path / "t.mp4", progress=False)
    assert result.frames_rendered == 9  # frames 8-11 hold keyframe 2: one key
    manifest = json.loads(result.manifest.read_text())["plan"]  # the manifest's plan lists each LoRA's weight per frame
    assert manifest["tracks"] == ["guidance", "lora:style"] and [f["lora:style"] for f in manifest["frames"][:5]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    store = FrameStore(result.store)

    def missing_frames(text: str) -> list[int]:
        timeline = parse_timeline(text, str(path), folder)
        frames = frame_plan(timeline, plan(timeline), store)
        missing = set(frames.missing)
        return [i for i, f in enumerate(frames.inputs) if f in missing]

    assert missing_frames(path.read_text()) == []
    assert missing_frames(lora_timeline(lora, (0.0, 0.75, 0.25), tiny_model_dir)) == [1, 2, 3, 4, 5, 6, 7]
    assert missing_frames(lora_timeline(lora, (0.0, 1.0, 0.5), tiny_model_dir)) == [5, 6, 7, 8, 9, 10, 11]
    # This LoRA has UNet layers only, so its top-level weight (used by no keyframe) changes nothing.
    assert missing_frames(path.read_text().replace("weight: 0.5", "weight: 0.9")) == []
    lora.write_bytes(make_lora(tiny_model_dir, tmp_path / "other" / "style.safetensors", seed=8).read_bytes())
    assert missing_frames(path.read_text()) == list(range(12))  # another file: every frame


def test_a_sweep_applies_loras_like_a_timeline(lora_file, tiny_model_dir, tmp_path, styled):
    sweep = lora_file.parent / "sweep.yaml"
    sweep.write_text(
        f"model: {tiny_model_dir}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nsteps: 3\nguidance: 5\nbatch_size: 4\ndevice: cpu\n"
        "scheduler: ddim\nloras: [{path: style.safetensors, weight: 0.6}]\nprompt: a cat in the snow\nx: {param: seed, values: [3, 4]}\n"
    )
    result = run_sweep(sweep, tmp_path / "sw")
    expected = render_all(styled, [frame(style=0.6, seed=3), frame(style=0.6, seed=4)])
    np.testing.assert_array_equal(result.images[0].astype(np.int64), expected)


# --- textual inversion --------------------------------------------------------------------------


def write_embedding(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def test_an_embedding_token_changes_the_encoding_only_where_it_is_used(tiny_model_dir, base, tmp_path):
    torch.manual_seed(9)
    embedding = write_embedding(tmp_path / "look.safetensors", {"emb_params": torch.randn(2, 32)})  # two vectors
    model = load_backend(ModelSpec(str(tiny_model_dir), embeddings=(EmbeddingSpec(str(embedding), "<look>"),)), device="cpu")
    for text in ("a cat in the snow", '"a dog" + 0.5 * ("a cat" - "a dog")'):
        assert torch.equal(model.encode(parse_prompt(text))["embeds"], base.encode(parse_prompt(text))["embeds"]), text
    used = model.encode(parse_prompt("a cat <look> in the snow"))["embeds"][0]  # (L, D)
    plain = base.encode(parse_prompt("a cat dog dog in the snow"))["embeds"][0]  # the same length: 2 vectors
    # CLIP's attention is causal: positions before the token (BOS, a, cat) are untouched, it and after differ.
    assert torch.equal(used[:3], plain[:3])
    assert (used[3] - plain[3]).abs().max() > 1e-3
    assert model.pipe.tokenizer.convert_tokens_to_ids(["<look>", "<look>_1"]) == [len(model.pipe.tokenizer) - 2, len(model.pipe.tokenizer) - 1]


def test_sdxl_embeddings_load_into_both_encoders(tiny_sdxl_dir, tmp_path):
    torch.manual_seed(10)
    good = write_embedding(tmp_path / "xl.safetensors", {"clip_l": torch.randn(1, 16), "clip_g": torch.randn(1, 32)})
    xl = load_backend(ModelSpec(str(tiny_sdxl_dir), embeddings=(EmbeddingSpec(str(good), "<xl>"),)), device="cpu")
    base = load_backend(ModelSpec(str(tiny_sdxl_dir)), device="cpu")
    assert torch.equal(xl.encode(parse_prompt("a cat"))["pooled"], base.encode(parse_prompt("a cat"))["pooled"])
    used, plain = xl.encode(parse_prompt("a <xl>"))["embeds"], base.encode(parse_prompt("a dog"))["embeds"]
    for lo, hi in ((0, 16), (16, 48)):  # each encoder's features see the token
        assert torch.equal(used[0, :2, lo:hi], plain[0, :2, lo:hi]) and (used[0, 2, lo:hi] - plain[0, 2, lo:hi]).abs().max() > 1e-3
    sd_file = write_embedding(tmp_path / "sd.safetensors", {"emb_params": torch.randn(1, 16)})
    with pytest.raises(UserError, match="not an SDXL embedding.*clip_l and clip_g"):
        load_backend(ModelSpec(str(tiny_sdxl_dir), embeddings=(EmbeddingSpec(str(sd_file), "<sd>"),)), device="cpu")


def test_embedding_mistakes_exit_2(tiny_model_dir, tmp_path, capsys):
    wide = write_embedding(tmp_path / "wide.safetensors", {"emb_params": torch.randn(1, 99)})  # not the encoder's width
    timeline = tmp_path / "t.yaml"
    body = f"model: {tiny_model_dir}\nwidth: {TINY_SIZE}\nheight: {TINY_SIZE}\nsteps: 2\nend: {{frame: 2}}\nkeyframes:\n  - {{frame: 0, prompt: a <w> cat}}\n"
    timeline.write_text(f"embeddings: [{{path: wide.safetensors, token: '<w>'}}]\n" + body)
    assert main(["render", str(timeline), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "t.yaml:1: embeddings[0].path: " in err and "holds vectors 99 wide, but the text encoder" in err and "Traceback" not in err
    timeline.write_text(f"embeddings: [{{path: wide.safetensors, token: 'a b'}}]\n" + body)
    assert main(["render", str(timeline), "--out", str(tmp_path / "x.mp4"), "--quiet"]) == 2
    assert "t.yaml:1: embeddings[0].token: 'a b' must be one word" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
