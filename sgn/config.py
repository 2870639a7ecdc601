"""Typed run configuration: dataclasses that round-trip to YAML.

A run is described by one :class:`TrainConfig`. Shipped profiles live in
``sgn/configs/NAME.yaml`` (``smoke``, ``cpu``, ``gpu``); :func:`load_config` takes a
profile name or a path, and :func:`apply_overrides` applies ``key=value`` strings
such as ``model.depth=2``. An unknown key, a value of the wrong type or one outside
its allowed range (:data:`RANGES`, :data:`CHOICES`, :meth:`TrainConfig.check`) is one
:class:`~sgn.utils.SGNError` naming the key and what was expected, raised when the
config is built, before anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sgn.augment import MAX_PITCH, Augmentation
from sgn.utils import SGNError, atomic_write_text, read_yaml, safe_load_bounded, shorten

CONFIG_DIR = Path(__file__).parent / "configs"
MAX_OVERRIDE_CHARS = 4096  # a --set value (a path at most)


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: finite, ``low <= value <= high`` (``low < value`` if ``open_low``)."""

    low: float
    high: float
    open_low: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > self.low if self.open_low else value >= self.low
        # isinstance(int): math.isfinite overflows on huge ints, which are finite anyway
        return (isinstance(value, int) or math.isfinite(value)) and above and value <= self.high

    def __str__(self) -> str:
        return f"{'>' if self.open_low else '>='} {self.low} and <= {self.high}"


# The range of every number of a run: wide enough for any sensible experiment, narrow enough
# that nothing crashes mid-run or allocates without bound. Rules that relate two keys are in
# TrainConfig.check; the models raise their own layout rules (e.g. warped_bins % patch_freq).
RANGES: dict[str, Range] = {
    "data.sample_rate": Range(4000, 192000),
    "data.segment_samples": Range(16, 2**22),
    "data.gain_min": Range(0, 100, open_low=True),
    "data.gain_max": Range(0, 100, open_low=True),
    "data.val_mixtures": Range(1, 100_000),
    "data.num_workers": Range(0, 256),
    "data.aug_eq_db": Range(0, 24),
    "data.aug_pitch": Range(0, MAX_PITCH),
    "data.aug_reverb": Range(0, 1),
    "data.aug_noise_db": Range(0, 120),
    "model.n_fft": Range(16, 65536),
    "model.hop": Range(1, 65536),
    "model.warped_bins": Range(2, 4096),
    "model.stem_channels": Range(1, 1024),
    "model.width": Range(2, 8192),
    "model.depth": Range(0, 64),
    "model.heads": Range(1, 256),
    "model.mlp_ratio": Range(0, 64, open_low=True),
    "model.patch_freq": Range(1, 256),
    "model.patch_time": Range(1, 256),
    "model.encoder_levels": Range(0, 8),
    "model.tokens_per_class": Range(1, 64),
    "model.gumbel_tau": Range(0, 1000, open_low=True),
    "model.unet_levels": Range(1, 12),
    "loss.ce_weight": Range(0, 1e6),
    "loss.bce_weight": Range(0, 1e6),
    "loss.assign_weight": Range(0, 1e6),
    "optim.lr": Range(0, 10, open_low=True),
    "optim.weight_decay": Range(0, 10),
    "optim.batch_size": Range(1, 65536),
    "optim.max_steps": Range(1, 10**9),
    "optim.warmup_steps": Range(0, 10**9),
    "optim.min_lr_ratio": Range(0, 1),
    "optim.grad_clip": Range(0, 1e6, open_low=True),
    "seed": Range(0, 2**63 - 1),
    "log_every": Range(1, 10**9),
    "eval_every": Range(1, 10**9),
}
# Training precisions and attention kernels (sgn.device.autocast_for and attention_kernel say what each means).
PRECISIONS = ("fp32", "bf16", "auto")
ATTENTIONS = ("auto", "fused", "math")
CHOICES: dict[str, tuple[str, ...]] = {"model.arch": ("sgn", "unet"), "loss.mask": ("bce", "l1"),
                                       "precision": PRECISIONS, "attention": ATTENTIONS}
N_SOURCES = re.compile(r"([1-9][0-9]{0,2})(?:-([1-9][0-9]{0,2}))?")  # "2" or "1-4"


@dataclass
class DataConfig:
    """Where the clips come from and how mixtures are made."""

    index: str = "data/synth_music/index.csv"  # an index.csv (see sgn.data)
    sample_rate: int = 11025
    segment_samples: int = 65535  # L of a training/validation mixture
    n_sources: str = "2"  # N per training mixture: "2", or a range "1-4"
    gain_min: float = 0.5  # per-source gain range while training (Sound-of-Pixels)
    gain_max: float = 1.5
    val_mixtures: int = 64  # size of the fixed validation list (val split)
    num_workers: int = 0  # DataLoader worker processes
    # on-the-fly augmentation of each training source (sgn.augment; 0 = off)
    aug_eq_db: float = 0.0  # random EQ curve within +-aug_eq_db dB
    aug_pitch: float = 0.0  # resampling by up to +-aug_pitch semitones
    aug_reverb: float = 0.0  # probability of a generated room
    aug_noise_db: float = 0.0  # a noise floor 0-20 dB below -aug_noise_db dB re the source

    def augmentation(self) -> Augmentation:
        return Augmentation(self.aug_eq_db, self.aug_pitch, self.aug_reverb, self.aug_noise_db)


@dataclass
class ModelConfig:
    """Architecture of the separator; ``arch`` selects SGN or the U-Net baseline."""

    arch: str = "sgn"  # "sgn" or "unet" (label-conditioned U-Net baseline)
    n_fft: int = 1022
    hop: int = 256
    warped_bins: int = 256  # Fw, log-frequency bins the network sees
    stem_channels: int = 32  # channels of the full-resolution convolutional features
    # SGN
    width: int = 256  # D
    depth: int = 4  # transformer self-attention layers
    heads: int = 8
    mlp_ratio: float = 4.0
    patch_freq: int = 8  # total encoder stride along frequency (tokens cover patch_freq bins)
    patch_time: int = 4  # total encoder stride along time
    encoder_levels: int = 2  # stride-2 conv levels before the tokens (multi-scale skip features)
    class_tokens: bool = True  # False: static learned queries outside self-attention (and no CE)
    grouping: bool = True  # False: class representations are the tokens' transformer outputs
    tokens_per_class: int = 1  # K
    share_tokens: bool = False  # True: classes 2j and 2j+1 share one token
    gumbel: bool = False  # hard straight-through Gumbel assignment while training
    gumbel_tau: float = 1.0
    # U-Net baseline (Sound-of-Pixels' audio network, class-id conditioned)
    unet_levels: int = 7


@dataclass
class LossConfig:
    """Training objective: mask loss + token CE + class-presence BCE."""

    mask: str = "bce"  # "bce": weighted BCE on binary masks; "l1": weighted L1 on ratio masks
    ce_weight: float = 0.1  # token classification (ignored without class tokens)
    bce_weight: float = 0.1  # class presence
    # Ours: present and absent classes each weigh half the presence BCE (the plain mean gives the
    # C - N absent ones most of it). Screened at the ablation budget and not kept (README, recipe record)
    bce_balanced: bool = False
    # Ours (sgn.loss.assignment_loss): the assignment classifies each patch as its dominant
    # source's class. Every profile trains with 0.1; 0 is the paper as inferred (the `paper` variant).
    assign_weight: float = 0.1


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 16
    max_steps: int = 20000
    warmup_steps: int = 500
    min_lr_ratio: float = 0.05  # final lr = lr * min_lr_ratio
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    # fp32 | bf16 | auto (bf16 where the device computes it natively: sgn.device.autocast_for).
    # Training and validation only: evaluation and separation run in fp32.
    precision: str = "auto"
    # auto | fused | math: PyTorch's attention kernel in training and validation (sgn.device.attention_kernel):
    # auto takes the math kernel under bf16 on a CPU, where it measured faster, and PyTorch's own choice elsewhere
    attention: str = "auto"
    compile: bool = False  # torch.compile the model (a failure falls back to eager with one warning)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`SGNError` for the first value outside :data:`RANGES`, :data:`CHOICES`
        or a rule between two keys ("config: KEY is VALUE; expected ...")."""
        flat = _flatten(to_dict(self))
        problems = [(key, f"one of {list(options)}") for key, options in CHOICES.items() if flat[key] not in options]
        problems += [(key, str(allowed)) for key, allowed in RANGES.items() if flat[key] not in allowed]
        if not problems:
            problems = [(key, expected) for key, ok, expected in _relations(flat) if not ok]
        if problems:
            key, expected = problems[0]
            raise SGNError(f"config: {key} is {shorten(flat[key])}; expected {expected}")


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _n_sources_ok(value: Any) -> bool:
    match = N_SOURCES.fullmatch(value) if isinstance(value, str) else None
    return match is not None and int(match[1]) <= int(match[2] or match[1])


# Bounds on a spectrogram's cost, checked before any work (a config read from YAML or from a
# checkpoint): the paper's STFT overlaps 4x and a 65535-sample segment holds 132k cells, so 16x
# overlap and 32 times the paper's cells leave room for any sensible experiment while a
# segment of 4M samples at hop 1 (a 6 GB separation of 2 seconds) is refused.
MAX_OVERLAP = 16
MAX_TF_CELLS = 2**22


def stft_cells(n_fft: int, hop: int, samples: int) -> int:
    """Time-frequency cells of one STFT of ``samples`` samples (frames x bins)."""
    return (samples // hop + 1) * (n_fft // 2 + 1)


def _relations(c: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """``(key, holds, expected)`` for the rules between keys (numbers already within RANGES)."""
    n_fft, heads, hop = c["model.n_fft"], c["model.heads"], c["model.hop"]
    cells = stft_cells(n_fft, hop, c["data.segment_samples"])
    return [
        ("model.hop", hop <= n_fft, f"<= model.n_fft ({n_fft})"),
        ("model.hop", hop * MAX_OVERLAP >= n_fft, f">= model.n_fft / {MAX_OVERLAP} ({-(-n_fft // MAX_OVERLAP)})"),
        ("data.segment_samples", cells <= MAX_TF_CELLS,
         f"a spectrogram of at most {MAX_TF_CELLS} cells ({cells} at n_fft {n_fft}, hop {hop})"),
        ("data.segment_samples", c["data.segment_samples"] >= n_fft, f">= model.n_fft ({n_fft})"),
        ("data.gain_max", c["data.gain_max"] >= c["data.gain_min"], f">= data.gain_min ({c['data.gain_min']})"),
        # attention splits the width among the heads; the sine/cosine position code needs it even
        ("model.width", c["model.width"] % heads == 0 and c["model.width"] % 2 == 0,
         f"an even multiple of model.heads ({heads})"),
        ("data.n_sources", _n_sources_ok(c["data.n_sources"]), "a count like 2 or a range like 1-4 (low <= high)"),
        ("data.index", isinstance(c["data.index"], str) and 0 < len(c["data.index"]) <= 4096,
         "a path of 1 to 4096 characters"),
    ]


def to_dict(config: Any) -> dict:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` where lossless, else raise SGNError."""
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        # "2" for a str field written as 2 in YAML.
        if annotation is str and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise SGNError(f"config: {key} expects {annotation.__name__}, got {shorten(value)}")
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (item_type,) = typing.get_args(annotation)[:1]
        return [_check_value(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None) and value is None:
                return None
            try:
                return _check_value(key, value, option)
            except SGNError:
                continue
    raise SGNError(f"config: {key} expects {annotation}, got {shorten(value)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise SGNError(f"config: {prefix.rstrip('.') or 'top level'} expects a mapping, got {shorten(data)}")
    if cls is TrainConfig and "bf16" in data and "precision" not in data:
        # configs and checkpoints written before `precision`: bf16 true meant bf16 where a GPU has it
        data = {**{k: v for k, v in data.items() if k != "bf16"}, "precision": "auto" if data["bf16"] is True else "fp32"}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = next((key for key in data if key not in names), None)
    if unknown is not None:
        close = difflib.get_close_matches(str(unknown), names, n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"known keys here: {', '.join(sorted(names))}"
        raise SGNError(f"config: unknown key {shorten(f'{prefix}{unknown}')}; {hint}")
    kwargs = {}
    for name, value in data.items():
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_dict(annotation, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_value(f"{prefix}{name}", value, annotation)
    return cls(**kwargs)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path) -> TrainConfig:
    """Load a shipped profile by name (``smoke``, ``cpu``, ``gpu``) or a YAML file by path;
    an error in the file's contents names the file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SGNError(f"config: no profile {shorten(str(name_or_path))}; shipped profiles: {available_profiles()}")
    data = read_yaml(path, "config file")
    try:
        return from_dict(TrainConfig, data)
    except SGNError as err:
        raise SGNError(f"{path}: {err}") from None


def apply_overrides(config: TrainConfig, overrides: Sequence[str] | Mapping[str, Any]) -> TrainConfig:
    """Apply overrides: ``section.key=value`` strings (values parsed as YAML scalars, as
    ``--set`` gives them) or a mapping ``{"section.key": value}`` of typed values."""
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = [_parse_override(item) for item in overrides]
    data = to_dict(config)
    for key, value in pairs:
        *parents, leaf = str(key).strip().split(".")
        node = data
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise SGNError(f"config: unknown key {shorten('.'.join(parents[: i + 1]))}")
            node = node[part]
        if leaf not in node or isinstance(node[leaf], dict):
            raise SGNError(f"config: unknown key {shorten(key)}")
        node[leaf] = value
    return from_dict(TrainConfig, data)


def _parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value read as YAML)``; a value that is not valid YAML stays text."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise SGNError(f"--set {shorten(item)}: expected key=value, e.g. optim.lr=3e-4")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise SGNError(f"--set {shorten(key)}: the value has {len(text)} characters; expected at most {MAX_OVERRIDE_CHARS}")
    try:
        return key, safe_load_bounded(text, f"--set {shorten(key)}")
    except yaml.YAMLError:
        return key, text


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, to_yaml(config))
