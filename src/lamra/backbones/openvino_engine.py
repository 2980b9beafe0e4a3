"""OpenVINO as the compact model's inference engine on CPU (``backend="openvino"``).

What runs where: the frozen EfficientNet trunk and the language model's decoder run in OpenVINO;
tokenising, the embedding lookup, the projector, pooling and the appearance channel stay in torch.
Why: PyTorch's CPU kernels run the trunk's depthwise convolutions at a few percent of the machine's
GEMM (`benchmarks/encode.py` splits an encode into its parts); OpenVINO runs the same trunk about
four times faster and fuses the decoder's norms, activations and attention. sentence-transformers
offers the same choice under the same name.

Both graphs are traced from the weights as loaded (LoRA adapters already folded), saved as OpenVINO
IR under ``$LAMRA_HOME/openvino/<digest of the weights>``, and read from there by later processes
(tracing the decoder takes about 15 s, reading it 1-2 s). Training never uses the engine: it serves
inference (``torch.is_grad_enabled()`` false) only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path

import torch

from lamra.atomic_io import atomic_directory

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino")
# OpenVINO's name for each precision this package computes in.
PRECISION_HINTS = {"bf16": "bf16", "fp32": "f32"}
IR_FORMAT = "1"  # bump when what is traced changes, so old folders are not read
TRUNK_FILE, DECODER_FILE = "trunk.xml", "decoder.xml"
KEEP_FOLDERS = 3  # the most recently used models' graphs kept (420 MB each); older ones are removed


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def import_openvino():
    try:
        import openvino
    except ImportError as error:
        raise ImportError("backend 'openvino' needs the openvino package: pip install 'lamra[openvino]'") from error
    return openvino


class _Trunk(torch.nn.Module):
    """The trunk's feature map (N, 1280, 7, 7) as a module's forward, for tracing."""

    def __init__(self, tower: torch.nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tower.extract_features(pixel_values)


class _Decoder(torch.nn.Module):
    """The decoder's last hidden state from input embeddings, for tracing."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, inputs_embeds, attention_mask, position_ids):
        return self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False).last_hidden_state


def weights_digest(*modules: torch.nn.Module) -> str:
    """A digest of the modules' weights (names, shapes and values), naming their IR folder."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(IR_FORMAT.encode())
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class OpenVINOEngine:
    """The compact model's trunk and decoder compiled for the CPU in ``precision`` ("bf16" or "fp32")."""

    def __init__(self, model: torch.nn.Module, precision: str, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None):
        if precision not in PRECISION_HINTS:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_HINTS)}, got {precision!r}")
        if next(model.parameters()).dtype != torch.float32:
            raise ValueError("backend 'openvino' converts float32 weights and picks its own precision: "
                             "load the model in float32 (not bf16-weights)")
        ov = import_openvino()
        from lamra.assets import lamra_home

        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            logger.warning("this CPU has no bf16 support in OpenVINO: computing in fp32")
            precision = "fp32"
        self.precision = precision  # what it computes in, reported by lamra.evaluate.environment.numerics
        trunk, decoder = _Trunk(model.vision_tower).eval(), _Decoder(model.language_model.model).eval()
        # What the graphs hold: the input embedding table stays in torch (the decoder takes embeddings).
        traced = (trunk, decoder.decoder.layers, decoder.decoder.norm)
        folder = Path(cache_dir or lamra_home() / "openvino") / weights_digest(*traced)
        self.folder = folder
        self.converted = False  # whether this process traced the graphs (False: read from the cache)
        graphs = self._read(core, folder)
        if graphs is None:
            graphs = self._convert(ov, model, trunk, decoder, folder)
        os.utime(folder)  # marks it used, for prune_folders
        prune_folders(folder.parent)
        config = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self._trunk = core.compile_model(graphs[0], "CPU", config)
        self._decoder = core.compile_model(graphs[1], "CPU", config)
        self._lock = threading.Lock()  # one inference at a time per compiled graph (a server's threads)

    @staticmethod
    def _read(core, folder: Path):
        if not (folder / TRUNK_FILE).is_file() or not (folder / DECODER_FILE).is_file():
            return None
        try:
            return core.read_model(folder / TRUNK_FILE), core.read_model(folder / DECODER_FILE)
        except RuntimeError as error:  # a damaged cache: trace again rather than fail
            logger.warning("OpenVINO cache %s unreadable (%s); converting again", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _convert(self, ov, model, trunk: _Trunk, decoder: _Decoder, folder: Path):
        from lamra.backbones.compact import ATTENTION_KERNEL

        logger.info("converting the compact model to OpenVINO (once per set of weights) into %s", folder)
        model.language_model.config._attn_implementation = ATTENTION_KERNEL  # trace the kernel torch runs
        hidden = model.config.hidden_size
        # The tracer warns about transformers' shape checks; with no key/value cache they take the same
        # branch for every batch shape (the tests compare padded batches of other shapes with torch).
        # OpenVINO's converter still calls torch.jit.trace, which torch now marks deprecated.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=DeprecationWarning)
            trunk_graph = ov.convert_model(trunk, example_input=torch.zeros(1, 3, 224, 224),
                                           input=[(-1, 3, 224, 224)])
            mask = torch.ones(2, 6, dtype=torch.long)
            mask[0, :2] = 0  # a left-padded row, so the traced mask logic handles padding
            example = {"inputs_embeds": torch.zeros(2, 6, hidden), "attention_mask": mask,
                       "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
            decoder_graph = ov.convert_model(decoder, example_input=example)
        with atomic_directory(folder) as staging:
            ov.save_model(trunk_graph, Path(staging) / TRUNK_FILE, compress_to_fp16=False)
            ov.save_model(decoder_graph, Path(staging) / DECODER_FILE, compress_to_fp16=False)
        self.converted = True
        return trunk_graph, decoder_graph

    def vision_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The trunk's feature maps (N, 1280, 7, 7), float32."""
        with self._lock:
            maps = self._trunk(pixel_values.float().cpu().numpy())[0]
        return torch.from_numpy(maps.copy())

    def decoder_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                       position_ids: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden state (B, L, hidden), float32."""
        feed = {
            "inputs_embeds": inputs_embeds.float().cpu().numpy(),
            "attention_mask": attention_mask.long().cpu().numpy(),
            "position_ids": position_ids.long().cpu().numpy(),
        }
        with self._lock:
            hidden = self._decoder(feed)[0]
        return torch.from_numpy(hidden.copy())


def prune_folders(cache: Path, keep: int = KEEP_FOLDERS) -> None:
    """Remove all but the ``keep`` most recently used graph folders (and leftovers of killed conversions)."""
    folders = sorted((f for f in cache.iterdir() if f.is_dir()), key=lambda f: f.stat().st_mtime, reverse=True)
    for stale in folders[keep:]:
        shutil.rmtree(stale, ignore_errors=True)


def use_openvino(backbone, precision: str, cache_dir: str | os.PathLike | None = None) -> OpenVINOEngine:
    """Run ``backbone``'s inference through OpenVINO in ``precision``: "auto", "bf16" or "fp32", as
    ``LamRA`` takes it ("auto": bf16 where the CPU has it)."""
    from lamra.retriever import uses_bf16_autocast

    if getattr(backbone, "kind", None) != "compact":
        raise ValueError("backend 'openvino' runs the compact model; Qwen-VL checkpoints use backend 'torch'")
    if backbone.device.type != "cpu":
        raise ValueError(f"backend 'openvino' runs on the CPU; this model is on {backbone.device}")
    computes_in = "bf16" if uses_bf16_autocast(backbone.device, precision) else "fp32"
    engine = OpenVINOEngine(backbone.hf_model, computes_in, cache_dir=cache_dir)
    backbone.hf_model.engine = engine
    return engine
