"""Where a render runs: the model's source, the torch device and the dtype, resolved once."""

from pathlib import Path
from typing import TYPE_CHECKING

from latentwalk.errors import UserError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")  # what pick_device takes
DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")  # what pick_dtype takes


def resolve_model(spec: str) -> str:
    """`toy` → the embedded model's folder; hub ids, folders and checkpoint files pass through."""
    if spec == "toy":
        from latentwalk.toy import MODEL_DIR

        return str(MODEL_DIR)
    return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


def pick_device(name: str) -> "torch.device":
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was asked for, but torch sees no CUDA device (install a CUDA build of torch)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device: 'mps' was asked for, but torch sees no MPS device")
    return torch.device(name)


def pick_dtype(name: str, device: "torch.device") -> "torch.dtype":
    """float16 on CUDA by default (half the memory, tensor cores); float32 elsewhere."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, name)
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError("dtype: float16 needs a GPU (CPU kernels for half precision are missing or slow); use bfloat16 or float32")
    return dtype
