"""Loading a ModelScope-layout text-to-video model (Zeroscope v2 576w / XL) component by component.

The original Zeroscope upload ships a ``model_index.json`` that diffusers' pipeline loader rejects, so
each component is read from its own sub-folder; that works for every layout of these models.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import torch

from .. import host
from ..common import hub, models
from ..common.compat import pretrained_dtype
from ..diffusion.sampler import LatentVideoModel

HUB_REPOS = {
    "zeroscope_v2_576w": "cerspense/zeroscope_v2_576w",
    "zeroscope_v2_XL": "cerspense/zeroscope_v2_XL",
    "text-to-video-ms-1.7b": "ali-vilab/text-to-video-ms-1.7b",
}

# sub-folder -> (required config file, accepted weight file patterns)
COMPONENTS = {
    "unet": ("config.json", ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")),
    "vae": ("config.json", ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")),
    "text_encoder": ("config.json", ("model*.safetensors", "pytorch_model*.bin")),
    "tokenizer": ("vocab.json", ("merges.txt",)),
    "scheduler": ("scheduler_config.json", ()),
}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class VideoDiffusionModel(LatentVideoModel):
    """The parts of a text-to-video latent diffusion model, kept on the offload device between runs."""

    name: str
    path: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict = field(repr=False)
    dtype: torch.dtype = torch.float32

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """The torch modules to move to the device for a run."""
        return (self.unet, self.vae, self.text_encoder)


def missing_files(folder: str) -> list[str]:
    """Files a component-wise load needs that ``folder`` lacks (relative paths, patterns for weights)."""
    missing = []
    for sub, (config, weights) in COMPONENTS.items():
        if not os.path.isfile(os.path.join(folder, sub, config)):
            missing.append(f"{sub}/{config}")
        if weights and not any(glob.glob(os.path.join(folder, sub, pattern)) for pattern in weights):
            missing.append(f"{sub}/{' or '.join(weights)}")
    return missing


def _missing_message(name: str, folder: str | None, missing: list[str]) -> str:
    repo = HUB_REPOS.get(name, "cerspense/zeroscope_v2_576w")
    where = folder or os.path.join(host.model_dirs("zeroscope")[0], name)
    files = "\n  ".join(missing) if missing else "(the whole folder)"
    return (
        f"model_name: the text-to-video model '{name}' is incomplete or missing at {where}.\n"
        f"Missing:\n  {files}\n"
        f"Download the Hugging Face repository '{repo}' into {where} "
        f"(for example: huggingface-cli download {repo} --local-dir \"{where}\"), "
        "or enable 'download_if_missing' on the loader."
    )


# Files of MS-Vid2Vid-XL (ali-vilab/MS-Vid2Vid-XL, ModelScope damo/Video-to-Video), the official StreamingT2V enhancer
MS_VID2VID_FILES = ("non_ema_0035000.pth", "v2-1_512-ema-pruned.ckpt")


def refuse_ms_vid2vid(name: str, folder: str) -> None:
    """A clear error for an MS-Vid2Vid-XL folder, which looks like a model here but is not one the pack can run."""
    if any(os.path.isfile(os.path.join(folder, f)) for f in MS_VID2VID_FILES):
        raise ValueError(
            f"model_name: '{name}' at {folder} is MS-Vid2Vid-XL (ModelScope's Vid2VidSDUNet), the official StreamingT2V "
            "enhancer, which the pack cannot run: it is not a diffusers model, and its UNet, OpenCLIP-H text encoder, "
            "SD 2.1 VAE and DPM++ 2M SDE sampler are not ported. Enhance with zeroscope_v2_XL instead "
            f"(Hugging Face '{HUB_REPOS['zeroscope_v2_XL']}'); the README's StreamingT2V section says what differs."
        )


def resolve_folder(name: str, download_if_missing: bool = False) -> str:
    """The model folder for ``name``, checked for completeness (and downloaded when allowed)."""
    folder = host.find_model("zeroscope", name)
    if folder is not None:
        refuse_ms_vid2vid(name, folder)
    if folder is None and download_if_missing:
        folder = download(name)
    if folder is None:
        raise FileNotFoundError(_missing_message(name, None, []))
    missing = missing_files(folder)
    if missing and download_if_missing:
        folder = download(name, folder)
        missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(_missing_message(name, folder, missing))
    return folder


def download(name: str, folder: str | None = None) -> str:
    """Fetch ``name`` from the Hugging Face Hub (explicit opt-in; refused in offline mode)."""
    return hub.download("zeroscope", name, HUB_REPOS, _weight_patterns, folder)


def _weight_patterns(repo: str) -> list[str]:
    """What to fetch: each component sub-folder's configs, tokenizer files and safetensors weights (the .bin
    ones where none exist); never the original uploads beside them (zs2_576w/: 4.8 GB the loader does not read)."""
    from huggingface_hub import list_repo_files

    files = list_repo_files(repo)
    ext = "safetensors" if any(f.split("/")[0] in COMPONENTS and f.endswith(".safetensors") for f in files) else "bin"
    return [f"{sub}/{pattern}" for sub in COMPONENTS for pattern in ("*.json", "*.txt", f"*.{ext}")]


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp16 on an accelerator; anything but fp32 is refused on CPU (forced to fp32)."""
    if device.type == "cpu":
        return torch.float32
    if choice == "auto":
        return torch.float16
    return DTYPES[choice]


def load_model(folder: str, dtype: torch.dtype = torch.float32) -> VideoDiffusionModel:
    """Load each component from its sub-folder of ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet3DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"), **pretrained_dtype(dtype))
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    scheduler_config = dict(DDIMScheduler.load_config(os.path.join(folder, "scheduler")))
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return VideoDiffusionModel(
        name=os.path.basename(os.path.normpath(folder)),
        path=folder,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        dtype=dtype,
    )


def load_cached(name: str, dtype_choice: str = "auto", download_if_missing: bool = False) -> VideoDiffusionModel:
    """Load ``name`` from the registered folders once; later runs reuse it until its files change."""
    folder = resolve_folder(name, download_if_missing)
    dtype = resolve_dtype(dtype_choice, host.torch_device())
    key = ("zeroscope", os.path.realpath(folder), str(dtype))
    return models.cached(key, lambda: load_model(folder, dtype), stamp=models.path_stamp(folder))
