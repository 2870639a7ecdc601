"""Typed run configuration: dataclasses that round-trip to YAML.

A run is described by one :class:`TrainConfig`. Shipped profiles live in
``sgn/configs/NAME.yaml`` (``smoke``, ``cpu``, ``gpu``); :func:`load_config` takes a
profile name or a path, and :func:`apply_overrides` applies ``key=value`` strings
such as ``model.depth=2``. An unknown key or a value of the wrong type is one
:class:`~sgn.utils.SGNError` naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sgn.utils import SGNError, atomic_write_text, read_yaml

CONFIG_DIR = Path(__file__).parent / "configs"


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
    bf16: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the model


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
        raise SGNError(f"config: {key} expects {annotation.__name__}, got {value!r}")
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
    raise SGNError(f"config: {key} expects {annotation}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise SGNError(f"config: {prefix.rstrip('.') or 'top level'} expects a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SGNError(f"config: unknown key {prefix}{unknown[0]}; known keys here: {sorted(names)}")
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
    """Load a shipped profile by name (``smoke``, ``cpu``, ``gpu``) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SGNError(f"config: no profile {name_or_path!r}; shipped profiles: {available_profiles()}")
    return from_dict(TrainConfig, read_yaml(path, "config file"))


def apply_overrides(config: TrainConfig, overrides: Sequence[str] | Mapping[str, Any]) -> TrainConfig:
    """Apply overrides: ``section.key=value`` strings (values parsed as YAML scalars, as
    ``--set`` gives them) or a mapping ``{"section.key": value}`` of typed values."""
    if isinstance(overrides, Mapping):
        pairs = list(overrides.items())
    else:
        pairs = []
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise SGNError(f"--set {item!r}: expected key=value, e.g. optim.lr=3e-4")
            try:
                pairs.append((key, yaml.safe_load(text)))
            except yaml.YAMLError:
                pairs.append((key, text))
    data = to_dict(config)
    for key, value in pairs:
        *parents, leaf = key.strip().split(".")
        node = data
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise SGNError(f"config: unknown key {'.'.join(parents[: i + 1])}")
            node = node[part]
        if leaf not in node or isinstance(node[leaf], dict):
            raise SGNError(f"config: unknown key {key}")
        node[leaf] = value
    return from_dict(TrainConfig, data)


def save_config(config: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, to_yaml(config))
