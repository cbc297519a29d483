"""Which page of the manual (docs/) explains a timeline field: what an error message points to.

`section(path)` maps a field's path, as the timeline reader names it (("audio", "bpm"),
("keyframes", 2, "image"), ("loras", 0, "weight")), to `docs/PAGE.md#anchor`. The most specific
rule wins: a keyframe key with a page of its own, then the top-level key, then the timeline
reference. tests/test_manual.py checks that every page and anchor here exists.
"""

TIMELINE = "docs/timeline.md"

# Top-level keys with a page of their own (or a section of one).
TOP_LEVEL: dict[str, str] = {
    "audio": "docs/beats.md",
    "model": "docs/models.md",
    "model_config": "docs/models.md#single-file-checkpoints",
    "vae": "docs/models.md#vae-override",
    "loras": "docs/models.md#lora-and-lora-travel",
    "embeddings": "docs/models.md#textual-inversion",
    "scheduler": "docs/models.md#few-step-models",
    "lyrics": "docs/tracks.md#lyrics",
    "lyrics_snap": "docs/tracks.md#lyrics",
    "lyrics_template": "docs/tracks.md#lyrics",
    "lyrics_vars": "docs/tracks.md#lyrics",
    "lyrics_overrides": "docs/tracks.md#lyrics",
    "lyrics_seed": "docs/tracks.md#lyrics",
    "mode": "docs/feedback.md",
    "cadence": "docs/feedback.md#other-keys",
    "coherence": "docs/feedback.md#other-keys",
    "fov": "docs/feedback.md#camera-tracks",
    "border": "docs/feedback.md#camera-tracks",
    "executor": "docs/farms.md",
    "ray_address": "docs/farms.md#a-cluster-of-machines",
    "ray_workers": "docs/farms.md",
    "ray_cpus_per_worker": "docs/farms.md",
    "spacing": "docs/smooth-travel.md#how-frames-are-placed",
    "share_steps": "docs/smooth-travel.md#shared-trajectories-share_steps",
    "interpolation": "docs/smooth-travel.md",
    "output": "docs/outputs.md",
    "loop": "docs/outputs.md#seamless-loops",
    "video": "docs/video-and-control.md",
    "controlnets": "docs/video-and-control.md",
    "keyframes": f"{TIMELINE}#keyframes-and-segments",
    "end": f"{TIMELINE}#keyframes-and-segments",
}
# Keyframe keys with a page of their own.
KEYFRAME: dict[str, str] = {
    "image": "docs/pictures.md#the-keys",
    "image_strength": "docs/pictures.md#image_strength",
    "loras": "docs/models.md#lora-and-lora-travel",
    "prompt": "docs/prompts.md",
    "negative_prompt": "docs/prompts.md",
}


def section(path: tuple) -> str:
    """The manual's section for the field at `path` (the timeline reference when nothing is closer)."""
    if not path:
        return TIMELINE
    top = path[0]
    if top == "keyframes" and len(path) > 2 and path[2] in KEYFRAME:
        return KEYFRAME[path[2]]
    if top in TOP_LEVEL:
        return TOP_LEVEL[top]
    from latentwalk.params import CAMERA_TRACKS, TRACK_DEFAULTS

    if top in CAMERA_TRACKS:
        return "docs/feedback.md#camera-tracks"
    if top in TRACK_DEFAULTS:
        return "docs/tracks.md#tracks"
    return TIMELINE
