"""Export a trained separator to ONNX, for the book's in-browser listening room.

``sgn export --checkpoint CKPT --out DIR`` writes two files:

* ``model.onnx``: the network, mixture magnitude ``magnitude [B, F, T]`` in, every
  class's mask on the linear STFT axis ``masks [B, C, F, T]`` out (sigmoid and unwarp
  inside the graph, so a consumer never sees the log-frequency warp); batch and time
  are dynamic.
* ``model.json``: what a consumer needs around the graph: classes, sample rate, the
  STFT (``n_fft``, ``hop``, periodic Hann window, centred frames with reflect padding,
  as :class:`sgn.audio.STFTSpec`), the chunk length the model was trained on, the git
  commit that exported it, the checkpoint's fingerprint (if it has one) and the opset.

The STFT and its inverse stay outside the graph: ONNX has an STFT operator but no
inverse, so the page computes both, with the same frames as ``torch.stft``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from sgn import __version__
from sgn.checkpoint import load_model
from sgn.config import TrainConfig
from sgn.interface import MaskSeparator
from sgn.utils import SGNError, atomic_path, atomic_write_text, check_output, git_commit, sha256_file

log = logging.getLogger(__name__)

EXPORT_FORMAT = "sgn-onnx/1"
# Architectures whose forward pass traces to a graph valid for every batch and length
# (checked by tests/test_export.py); others are refused rather than exported wrong.
EXPORTABLE = ("sgn", "unet")
# 17: the first opset with a LayerNorm operator; onnxruntime-web runs it.
OPSET = 17
MODEL_FILE, META_FILE = "model.onnx", "model.json"


class LinearMasks(nn.Module):
    """The graph that is exported: ``magnitude [B, F, T]`` -> ``masks [B, C, F, T]`` in [0, 1],
    through :meth:`sgn.interface.MaskSeparator.linear_masks` for every class."""

    def __init__(self, model: MaskSeparator):
        super().__init__()
        self.model = model

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        n_classes = len(self.model.classes)
        class_ids = torch.arange(n_classes, device=magnitude.device)[None].expand(magnitude.shape[0], -1)  # [B, C]
        return self.model.linear_masks(self.model(magnitude), class_ids)


def check_exportable(model: MaskSeparator, source: str) -> None:
    """One :class:`SGNError` naming ``source`` unless the model's architecture is in :data:`EXPORTABLE`."""
    arch = model.config.arch
    if arch not in EXPORTABLE:
        raise SGNError(f"{source}: a {arch!r} model cannot be exported to ONNX (exportable: {', '.join(EXPORTABLE)})")


def export_onnx(model: MaskSeparator, path: str | os.PathLike, *, n_frames: int = 33) -> Path:
    """Write ``model`` (eval mode, on the CPU) as an ONNX graph with dynamic batch and time.

    The legacy TorchScript exporter traces one forward pass of ``n_frames`` frames; the
    model's shape arithmetic is traced as graph operations, so other lengths run the same
    graph (``tests/test_export.py`` checks several).
    """
    check_exportable(model, str(path))
    graph = LinearMasks(model.cpu().eval()).eval()
    example = torch.rand(1, model.stft.n_bins, n_frames)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # the tracer warns of every Python number it freezes; the only one left is the
        # attention scale sqrt(D), a constant (the test checks other lengths), and the
        # legacy exporter warns of its own deprecation
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["magnitude"], output_names=["masks"],
                          dynamic_axes={"magnitude": {0: "B", 2: "T"}, "masks": {0: "B", 3: "T"}})
    return Path(path)


def export_metadata(model: MaskSeparator, config: TrainConfig, state: dict, checkpoint: Path) -> dict:
    """The ``model.json`` record of an export (see the module docstring)."""
    return {
        "format": EXPORT_FORMAT,
        "arch": config.model.arch,
        "classes": list(model.classes),
        "sample_rate": config.data.sample_rate,
        "n_fft": model.stft.n_fft,
        "hop": model.stft.hop,
        "window": "hann (periodic), centred frames, reflect padding (torch.stft center=True)",
        "chunk_samples": config.data.segment_samples,
        "inputs": {"magnitude": "[B, F, T], F = n_fft // 2 + 1"},
        "outputs": {"masks": "[B, C, F, T], C = len(classes), values in [0, 1]"},
        "opset": OPSET,
        "git_commit": git_commit(),
        "sgn_version": __version__,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "fingerprint": state.get("fingerprint"),
    }


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Export a checkpoint into ``out_dir``: ``model.onnx`` and ``model.json`` (written last).

    Returns:
        ``{"model": path, "meta": path}``.

    Raises:
        SGNError: an unreadable checkpoint, an architecture that cannot be exported, or
            an output that cannot be written (checked before any work).
    """
    checkpoint = Path(checkpoint)
    # the checkpoint's own folder is refused too: model.onnx and model.json would land among its files
    out_dir = check_output(out_dir, kind="dir", inputs=[checkpoint, checkpoint.parent])
    model, config, state = load_model(checkpoint)
    check_exportable(model, str(checkpoint))
    try:  # the record is made first: a checkpoint it cannot describe leaves nothing written
        meta_text = json.dumps(export_metadata(model, config, state, checkpoint), indent=1) + "\n"
    except (TypeError, ValueError):
        raise SGNError(f"{checkpoint}: its fingerprint is not a JSON record; not an sgn training checkpoint") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = export_onnx(model, out_dir / MODEL_FILE)
    meta_path = out_dir / META_FILE
    atomic_write_text(meta_path, meta_text)
    log.info("exported %s to %s (%.1f MB)", checkpoint, model_path, model_path.stat().st_size / 1e6)
    return {"model": model_path, "meta": meta_path}
