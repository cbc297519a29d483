"""Per-frame parameters, named once: every track's default and bounds, LoRA weights and seeds.

The timeline reads these names, the schedule travels them, the engine and feedback mode
consume them; all of them import the names from here, so no table is copied. Torch-free.
"""

# A LoRA's per-frame weight is the frame param LORA_PARAM + its name, e.g. "lora:style".
LORA_PARAM = "lora:"
DEFAULT_LORA_WEIGHT = 1.0  # a LoRA listed without `weight:`
MAX_SEED = 2**63  # torch.Generator.manual_seed takes a signed 64-bit seed
MAX_GUIDANCE = 100  # past this, classifier-free guidance only saturates the picture
# Per-frame numeric tracks: a number or an expression (see tracks.py), at top level or per keyframe,
# travelling between keyframes with the segment's easing. The default of each has no effect:
# noise_shift slerps a frame's noise toward a second noise direction (0 = today's noise);
# prompt_offset and noise_offset are added to the prompt and noise travel weights t and noise_t.
# Camera tracks (mode: feedback): the camera's step from the previous frame to this one (see
# camera.Motion; zoom 1 and 0 elsewhere stand still) and img2img strength, how much of the warped
# previous frame each frame re-imagines.
CAMERA_TRACKS: dict[str, float] = {
    "zoom": 1.0, "angle": 0.0, "translate_x": 0.0, "translate_y": 0.0, "translate_z": 0.0, "rotation_x": 0.0, "rotation_y": 0.0,
    "strength": 0.6,
}
# Image keyframes: how far a frame re-imagines the pictures it travels between (0: the picture
# itself at its keyframe; 1: a new image from the keyframe's seed under its prompt; docs/pictures.md).
IMAGE_STRENGTH = "image_strength"
TRACK_DEFAULTS: dict[str, float] = {"guidance": 7.5, "noise_shift": 0.0, "prompt_offset": 0.0, "noise_offset": 0.0, IMAGE_STRENGTH: 0.0} | CAMERA_TRACKS
# (low, high, low exclusive) of tracks with a range: constants are checked against it when the
# timeline is read, keyframed and expression values per frame when the schedule is made.
TRACK_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "guidance": (0.0, MAX_GUIDANCE, False), "zoom": (0.0, None, True), "strength": (0.0, 1.0, False),
    IMAGE_STRENGTH: (0.0, 1.0, False),
}
# Camera vocabulary (mode: feedback), shared by the timeline's checks and camera.py's warps.
CAMERA_BORDERS = {"reflect": "reflection", "replicate": "border"}  # our name → grid_sample's padding_mode
DEFAULT_FOV = 40.0  # degrees across the width, as Deforum's 3D mode; sets the focal length for 3D steps
MAX_SHARPEN = 1.0  # unsharp amounts above this ring and, fed back, explode within tens of frames


def lora_param(name: str) -> str:
    """The frame param that carries LoRA `name`'s weight."""
    return LORA_PARAM + name
