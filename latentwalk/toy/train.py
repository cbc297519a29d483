"""Train the embedded toy text-to-image model from scratch on `world` pictures, on a CPU.

    python -m latentwalk.toy.train [--out DIR] [--seed 0] [--vae-steps N] [--unet-steps N]
    python -m latentwalk.toy.train --evaluate [--out DIR]   # held-out VAE figures of a model
    python -m latentwalk.toy.train --photos --vae-only --out DIR  # the VAE on photographs too

Two phases, as in latent diffusion (Rombach et al. 2022, arXiv:2112.10752): an
AutoencoderKL learns to compress 128x128 pictures to 4x16x16 latents (from the world's
pictures; with --photos also from photographs and artwork that `pictures` fetches from
package registries, so that it may hold a user's own picture); then, with the VAE
frozen and the dataset's latents cached, a CLIP text encoder and a UNet learn the DDPM
epsilon objective together (Ho et al. 2020), with captions dropped 10% of the time so that
classifier-free guidance works (Ho & Salimans 2022). The output is a plain diffusers
StableDiffusionPipeline folder, plus `training.json` with the config and phase timings.
"""

import argparse
import json
import math
import random
import string
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from latentwalk.toy import MODEL_DIR, pictures, world
from latentwalk.toy.tokenizer import write_clip_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the machine's float behaviour)."""

    out: Path = MODEL_DIR
    seed: int = 0
    # Fixed, because CPU reductions may differ with the thread count. One thread, because on
    # a shared 2-core machine two threads stall each other at every op whenever another
    # process holds a core (measured: 0.75 s/step quiet, 20 s spikes loaded; 1.2 s steady).
    threads: int = 1
    dataset_size: int = 6000  # scenes rendered once; captions are re-drawn every step
    # VAE phase: 128x128 -> 4x16x16; trains on crops, which a fully convolutional VAE allows.
    vae_steps: int = 1400
    vae_batch_size: int = 16
    vae_crop: int = 48
    vae_lr: float = 2e-3
    vae_channels: tuple[int, ...] = (32, 64, 64, 64)
    vae_clip_grad: float | None = None  # gradient-norm clipping of the VAE phase (PHOTOS: 1)
    # Photographs and artwork (`pictures`, see PHOTOS): this many 128x128 views (random scale,
    # crop, mirror, colour jitter) are made once; this fraction of every VAE batch comes from
    # them. 0: the world's pictures only, as the shipped model was trained.
    photo_tiles: int = 0
    photo_fraction: float = 0.5
    data_dir: Path | None = None  # where `pictures` keeps its downloads (default ~/.cache)
    evaluate: bool = False  # only print the held-out VAE figures of the model in `out`
    vae_only: bool = False  # train, evaluate and save the VAE only (out/vae), no UNet
    # At least 4 channels per GroupNorm group: with one channel a group is an instance norm,
    # which removes each channel's mean, i.e. the picture's overall colour and brightness
    # (measured: 32 groups left reconstructions grey, MSE 0.13 vs 0.07 with 8 at 300 steps).
    vae_groups: int = 8
    kl_weight: float = 1e-6  # near-deterministic like SD's VAE; scaling_factor fixes the scale
    # Text encoder + UNet phase.
    unet_steps: int = 2000
    batch_size: int = 32
    lr: float = 6e-4
    warmup_steps: int = 150
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0  # Min-SNR weighting (Hang et al. 2023) converges faster
    caption_dropout: float = 0.1
    junk_word_prob: float = 0.15  # unknown words mixed into captions, to be ignored
    unet_channels: tuple[int, ...] = (64, 96, 96)
    unet_groups: int = 16  # 4-6 channels per group, for the same reason
    attention_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    max_length: int = 32  # tokens, BOS and EOS included
    log_every: int = 50

    def __post_init__(self) -> None:
        for name in ("threads", "dataset_size", "vae_batch_size", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("vae_steps", "unet_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.vae_crop % 8 or not 8 <= self.vae_crop <= world.SIZE:
            raise ValueError(f"vae_crop must be a multiple of 8 up to {world.SIZE}, got {self.vae_crop}")
        if not 0 <= self.photo_fraction <= 1 or self.photo_tiles < 0:
            raise ValueError(f"photo_fraction must be in [0, 1] and photo_tiles >= 0")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


# Small enough for a test to run end to end in seconds.
TINY = dict(
    dataset_size=48, vae_steps=2, vae_batch_size=4, vae_crop=32, vae_channels=(8, 8, 8, 8),
    vae_groups=4, unet_steps=3, batch_size=4, warmup_steps=1, unet_channels=(16, 16, 16),
    unet_groups=4, attention_heads=2, text_hidden=16, text_layers=1, log_every=1, photo_tiles=0,
)


# The VAE that also learns photographs and artwork (issue 25), not yet the shipped model: in
# a 600-step trial it held held-out pictures no better than the shipped VAE (see the card).
PHOTOS = dict(photo_tiles=3000, vae_channels=(32, 64, 128, 128), vae_clip_grad=1.0)


# ---------------------------------------------------------------------------- models


def build_vae(config: TrainConfig, scaling_factor: float = 1.0) -> AutoencoderKL:
    """An SD-layout AutoencoderKL, 8x downsampling, with no attention so crops generalise."""
    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=config.vae_groups,
        sample_size=world.SIZE,
        scaling_factor=scaling_factor,
        mid_block_add_attention=False,
    )


def build_text_encoder(config: TrainConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A small CLIP text transformer over the tokenizer's vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.text_hidden,
            intermediate_size=4 * config.text_hidden,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.attention_heads,
            max_position_embeddings=config.max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_unet(config: TrainConfig, latent_size: int) -> UNet2DConditionModel:
    """A UNet with cross-attention at the two coarser levels, where global attributes live."""
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        cross_attention_dim=config.text_hidden,
        attention_head_dim=config.attention_heads,  # diffusers reads this as the head count
        norm_num_groups=config.unet_groups,
    )


def build_scheduler() -> DDIMScheduler:
    """Stable Diffusion's scaled-linear schedule, epsilon prediction, 1000 training steps."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- helpers


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1], as diffusers' VAEs expect."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def random_crops(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One random size x size crop per image."""
    ys = rng.integers(0, images.shape[1] - size + 1, len(images))
    xs = rng.integers(0, images.shape[2] - size + 1, len(images))
    return np.stack([im[y : y + size, x : x + size] for im, y, x in zip(images, ys, xs)])


def with_junk(caption: str, rng: np.random.Generator) -> str:
    """Insert one or two random out-of-vocabulary words, which the tokenizer spells out."""
    words = caption.split(" ")
    for _ in range(int(rng.integers(1, 3))):
        junk = "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(3, 8))))
        words.insert(int(rng.integers(len(words) + 1)), junk)
    return " ".join(words)


def training_captions(
    attributes: list[world.Attributes], config: TrainConfig, rng: np.random.Generator
) -> list[str]:
    """Fresh captions for a batch: some empty (for guidance), some with junk words."""
    captions = []
    for a in attributes:
        if rng.random() < config.caption_dropout:
            captions.append("")
            continue
        text = world.caption(a, rng)
        captions.append(with_junk(text, rng) if rng.random() < config.junk_word_prob else text)
    return captions


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """(B, max_length) token ids, padded and truncated exactly as the SD pipeline does."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids


class Progress:
    """Prints step, mean loss, elapsed time and ETA every `every` steps."""

    def __init__(self, phase: str, total: int, every: int) -> None:
        self.phase, self.total, self.every = phase, total, every
        self.start, self.losses = time.time(), []

    def update(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if (step + 1) % self.every and step + 1 != self.total:
            return
        elapsed = time.time() - self.start
        eta = elapsed / (step + 1) * (self.total - step - 1)
        mean = sum(self.losses) / len(self.losses)
        print(f"[{self.phase}] step {step + 1}/{self.total} loss {mean:.4f} "
              f"elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min", flush=True)
        self.losses = []


# ---------------------------------------------------------------------------- phases


def render_dataset(config: TrainConfig) -> tuple[np.ndarray, list[world.Attributes]]:
    """(N, 128, 128, 3) uint8 pictures and their attributes; captions are drawn later."""
    rng = np.random.default_rng(config.seed)
    scenes = [world.sample(rng) for _ in range(config.dataset_size)]
    return np.stack([s.image for s in scenes]), [s.attributes for s in scenes]


def photo_tiles(config: TrainConfig) -> np.ndarray:
    """(photo_tiles, 128, 128, 3) uint8 views of the training photographs (none held out)."""
    if not config.photo_tiles:
        return np.zeros((0, world.SIZE, world.SIZE, 3), np.uint8)
    images = [p.image for p in pictures.load(config.data_dir) if not p.held_out]
    return pictures.tiles(images, config.photo_tiles, np.random.default_rng(config.seed + 4), world.SIZE)


def train_vae(
    config: TrainConfig, images: np.ndarray, generator: torch.Generator, photos: np.ndarray | None = None
) -> AutoencoderKL:
    """Reconstruction (MSE + L1) plus a tiny KL term, on random crops of world pictures and
    (a `photo_fraction` of each batch) of photograph tiles."""
    torch.manual_seed(config.seed)
    vae = build_vae(config)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed + 1)
    progress = Progress("vae", config.vae_steps, config.log_every)
    n_photos = round(config.vae_batch_size * config.photo_fraction) if photos is not None and len(photos) else 0
    vae.train()
    for step in range(config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.vae_steps, config.vae_lr, config.warmup_steps)
        batch = images[rng.integers(0, len(images), config.vae_batch_size - n_photos)]
        if n_photos:
            batch = np.concatenate([batch, photos[rng.integers(0, len(photos), n_photos)]])
        x = to_tensor(random_crops(batch, config.vae_crop, rng))  # (B, 3, crop, crop)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x) + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.vae_clip_grad:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), config.vae_clip_grad)
        optimizer.step()
        progress.update(step, loss.item())
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images: np.ndarray, generator: torch.Generator):
    """Posterior means and stds, (N, 4, 16, 16) each, and the scale giving unit variance."""
    means, stds = [], []
    for start in range(0, len(images), 64):
        dist = vae.encode(to_tensor(images[start : start + 64])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    sample = mean + std * torch.randn(mean.shape, generator=generator)
    return mean, std, 1.0 / sample.std().item()


def train_diffusion(
    config: TrainConfig,
    latents: tuple[torch.Tensor, torch.Tensor, float],
    attributes: list[world.Attributes],
    tokenizer: CLIPTokenizer,
    generator: torch.Generator,
) -> tuple[CLIPTextModel, UNet2DConditionModel]:
    """Text encoder and UNet on the epsilon objective; returns their EMA weights."""
    mean, std, scale = latents
    torch.manual_seed(config.seed + 2)
    text_encoder = build_text_encoder(config, tokenizer)
    unet = build_unet(config, mean.shape[-1])
    scheduler = build_scheduler()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    alphas_cumprod = scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = torch.clamp(snr, max=config.min_snr_gamma) / snr  # Min-SNR-gamma, epsilon form
    rng = np.random.default_rng(config.seed + 3)
    progress = Progress("unet", config.unet_steps, config.log_every)
    text_encoder.train()
    unet.train()
    for step in range(config.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.unet_steps, config.lr, config.warmup_steps)
        # 1. A batch: cached posterior -> latent sample, fresh captions.
        index = rng.integers(0, len(mean), config.batch_size)
        ids = tokenize(tokenizer, training_captions([attributes[i] for i in index], config, rng))
        index_t = torch.from_numpy(index)
        x0 = (mean[index_t] + std[index_t] * torch.randn(mean[index_t].shape, generator=generator)) * scale
        # 2. Noise it at random timesteps and predict the noise.
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, len(alphas_cumprod), (len(x0),), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        loss = (weights[t] * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # 3. EMA, with a short warmup so early steps are not averaged with the random init.
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        progress.update(step, loss.item())
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    return text_encoder.eval().requires_grad_(False), unet.eval().requires_grad_(False)


def _config_record(config: TrainConfig) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()
            if k not in ("data_dir", "evaluate", "vae_only")}


def train(config: TrainConfig) -> dict[str, float]:
    """Run both phases and write the diffusers folder to `config.out`; returns phase seconds."""
    timings: dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        timings[name] = round(time.time() - start, 1)
        print(f"[{name}] done in {timings[name] / 60:.1f} min", flush=True)
        return time.time()

    # 1. Determinism: one seed for numpy, python and torch, a fixed thread count.
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # denormal floats make CPU convolutions crawl
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    out = Path(config.out)
    started = clock = time.time()
    # 2. Data: the world's scenes, and views of the photographs.
    images, attributes = render_dataset(config)
    photos = photo_tiles(config)
    clock = lap("data", clock)
    # 3. VAE, then the cached latents of the whole dataset.
    vae = train_vae(config, images, generator, photos)
    clock = lap("vae", clock)
    mean, std, scale = encode_dataset(vae, images, generator)
    vae.register_to_config(scaling_factor=scale)
    print(f"[encode] latents {tuple(mean.shape)}, scaling_factor {scale:.4f}", flush=True)
    clock = lap("encode", clock)
    # The VAE's held-out figures now, so a long run shows them before the UNet phase.
    figures = evaluate_vae(vae, config.data_dir) if config.photo_tiles or config.vae_only else {}
    if figures:
        print(format_figures(figures), flush=True)
        vae.save_pretrained(out / "vae", safe_serialization=True)
    if config.vae_only:
        (out / "vae" / "training.json").write_text(json.dumps(
            {"config": _config_record(config), "seconds": timings, "vae_held_out": figures}, indent=2) + "\n")
        return timings
    # 4. Tokenizer, text encoder and UNet.
    write_clip_tokenizer(list(world.VOCABULARY), out / "tokenizer", config.max_length)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text_encoder, unet = train_diffusion(config, (mean, std, scale), attributes, tokenizer, generator)
    clock = lap("unet", clock)
    # 5. Save a plain StableDiffusionPipeline and the config that produced it.
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    lap("save", clock)
    timings["total"] = round(time.time() - started, 1)
    params = {name: count_parameters(m) for name, m in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))}
    record = {"config": _config_record(config),
              "seconds": timings, "parameters": params, "scaling_factor": scale,
              "torch": torch.__version__, "vae_held_out": figures}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print("timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()), flush=True)
    return timings


# ---------------------------------------------------------------------------- evaluation

WORLD_EVAL_SEED = 1000  # world scenes for the VAE figures; training draws from seed 0
WORLD_EVAL_SCENES = 32


@torch.no_grad()
def round_trip(vae: AutoencoderKL, images: np.ndarray) -> np.ndarray:
    """Encode (posterior mean) and decode uint8 (B, 128, 128, 3) pictures, back as uint8."""
    out = []
    for start in range(0, len(images), 16):
        x = to_tensor(images[start : start + 16])
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def held_out_pictures(data_dir: Path | None = None) -> dict[str, np.ndarray]:
    """name -> 128x128 uint8: the held-out photographs and artwork (centred squares) and the
    drawings of `pictures.drawings`, none of which the VAE trains on."""
    chosen = {p.name.split("/")[-1] if "wallpapers/" not in p.name else p.name.split("/")[3]: pictures.square(p.image)
              for p in pictures.load(data_dir) if p.held_out}
    return {**chosen, **{f"drawn {k}": v for k, v in pictures.drawings().items()}}


def evaluate_vae(vae: AutoencoderKL, data_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Round-trip PSNR (dB) and SSIM of each held-out picture, their means, and the means over
    `WORLD_EVAL_SCENES` world scenes."""
    vae = vae.eval()
    named = held_out_pictures(data_dir)
    back = round_trip(vae, np.stack(list(named.values())))
    figures = {name: {"psnr": pictures.psnr(a, b), "ssim": pictures.ssim(a, b)}
               for (name, a), b in zip(named.items(), back)}
    for key in ("psnr", "ssim"):
        figures.setdefault("held-out mean", {})[key] = float(np.mean([f[key] for f in list(figures.values())[: len(named)]]))
    rng = np.random.default_rng(WORLD_EVAL_SEED)
    scenes = np.stack([world.sample(rng).image for _ in range(WORLD_EVAL_SCENES)])
    back = round_trip(vae, scenes)
    figures["world mean"] = {
        "psnr": float(np.mean([pictures.psnr(a, b) for a, b in zip(scenes, back)])),
        "ssim": float(np.mean([pictures.ssim(a, b) for a, b in zip(scenes, back)])),
    }
    return {name: {k: round(v, 4) for k, v in f.items()} for name, f in figures.items()}


def format_figures(figures: dict[str, dict[str, float]]) -> str:
    lines = [f"{'picture':24} {'PSNR dB':>8} {'SSIM':>6}"]
    lines += [f"{name:24} {f['psnr']:8.2f} {f['ssim']:6.3f}" for name, f in figures.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m latentwalk.toy.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=defaults.out, help="diffusers folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vae-steps", type=int, help=f"default {defaults.vae_steps}")
    parser.add_argument("--unet-steps", type=int, help=f"default {defaults.unet_steps}")
    parser.add_argument("--batch-size", type=int, help=f"UNet batch, default {defaults.batch_size}")
    parser.add_argument("--vae-batch-size", type=int, help=f"default {defaults.vae_batch_size}")
    parser.add_argument("--dataset-size", type=int, help=f"default {defaults.dataset_size}")
    parser.add_argument("--threads", type=int, help=f"default {defaults.threads}")
    parser.add_argument("--photo-tiles", type=int, help=f"photograph views for the VAE, default {defaults.photo_tiles} (0: none)")
    parser.add_argument("--data-dir", type=Path, help="download folder of the pictures (default ~/.cache/latentwalk/toy-pictures)")
    parser.add_argument("--tiny", action="store_true", help="tiny models and a few steps, for tests")
    parser.add_argument("--photos", action="store_true", help="also train the VAE on photographs and artwork (PHOTOS; not the shipped model yet)")
    parser.add_argument("--vae-only", action="store_true", help="train, evaluate and save the VAE only (OUT/vae)")
    parser.add_argument("--evaluate", action="store_true", help="print the held-out VAE figures of the model in --out; train nothing")
    args = parser.parse_args(argv)
    if args.vae_only and Path(args.out).resolve() == MODEL_DIR.resolve():
        parser.error("--vae-only needs an --out other than the shipped model (its UNet needs its own VAE)")
    config = replace(TrainConfig(**TINY) if args.tiny else defaults, out=args.out, seed=args.seed)
    if args.photos:
        config = replace(config, **PHOTOS)
    overrides = {
        "vae_steps": args.vae_steps, "unet_steps": args.unet_steps, "batch_size": args.batch_size,
        "vae_batch_size": args.vae_batch_size, "dataset_size": args.dataset_size, "threads": args.threads,
        "photo_tiles": args.photo_tiles, "data_dir": args.data_dir,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return replace(config, evaluate=args.evaluate, vae_only=args.vae_only)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    if config.evaluate:
        torch.set_num_threads(config.threads)
        vae = AutoencoderKL.from_pretrained(Path(config.out) / "vae")
        print(format_figures(evaluate_vae(vae, config.data_dir)))
    else:
        train(config)


if __name__ == "__main__":
    main()
