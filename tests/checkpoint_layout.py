"""A diffusers SD 1.x folder's weights in the original single-file (CompVis/LDM) layout.

The inverse of what diffusers' `from_single_file` reads, adapted from diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py but for any number of blocks and
layers per block (the script hard-codes SD 1.x's four blocks of two), so tiny test models
can be written as the one-file checkpoints artists download.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # SD 1.x: CLIP ViT-L under its transformers names

UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
               ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
VAE_FIXED = {"conv_norm_out": "norm_out"}
VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def rename(name: str, pairs) -> str:
    for new, old in pairs:
        name = re.sub(rf"(^|\.){re.escape(new)}\.", rf"\g<1>{old}.", name)
    return name


def unet_to_original(state: dict, layers: int) -> dict:
    """UNet2DConditionModel names → `model.diffusion_model.*` (input/middle/output blocks)."""
    has_attention = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for name, tensor in state.items():
        head, _, leaf = name.rpartition(".")
        if head in UNET_FIXED:
            new = f"{UNET_FIXED[head]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + block * (layers + 1) + j
            new = f"input_blocks.{index}.0.{rename(rest, UNET_RESNET)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
            new = f"input_blocks.{1 + int(m[1]) * (layers + 1) + layers}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name):
            new = f"middle_block.{2 * int(m[2])}.{rename(m[3], UNET_RESNET)}" if m[1] == "resnets" else f"middle_block.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = block * (layers + 1) + j
            new = f"output_blocks.{index}.0.{rename(rest, UNET_RESNET)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
            block = int(m[1])
            new = f"output_blocks.{block * (layers + 1) + layers}.{2 if block in has_attention else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"no original name for UNet tensor {name}")
        out[UNET_PREFIX + new] = tensor
    return out


def vae_to_original(state: dict, n_blocks: int) -> dict:
    """AutoencoderKL names → `first_stage_model.*`; attention projections as 1x1 convolutions."""
    out = {}
    for name, tensor in state.items():
        new = name
        for coder in ("encoder", "decoder"):
            for fixed, old in VAE_FIXED.items():
                new = new.replace(f"{coder}.{fixed}.", f"{coder}.{old}.")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        new = new.replace("conv_shortcut.", "nin_shortcut.")
        if ".mid_block.attentions.0." in new:
            new = rename(new.replace("mid_block.attentions.0.", "mid.attn_1."), VAE_ATTENTION)
            if tensor.ndim == 2:  # linear → 1x1 convolution, as the original stores it
                tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + new] = tensor
    return out


def write_sd_checkpoint(folder: Path, path: Path) -> Path:
    """Write the SD folder's UNet, VAE and text encoder as one original-layout file (.safetensors or .ckpt)."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    state = {}
    state |= unet_to_original(load_file(folder / "unet" / "diffusion_pytorch_model.safetensors"), unet_config["layers_per_block"])
    state |= vae_to_original(load_file(folder / "vae" / "diffusion_pytorch_model.safetensors"), len(vae_config["block_out_channels"]))
    # transformers 5 saves CLIPTextModel without its `text_model.` wrapper; checkpoints have it.
    clip = load_file(folder / "text_encoder" / "model.safetensors")
    state |= {CLIP_PREFIX + ("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in clip.items()}
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    return path
