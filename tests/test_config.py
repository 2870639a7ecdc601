import pytest
import yaml

from sgn.config import (
    TrainConfig,
    apply_overrides,
    available_profiles,
    from_dict,
    load_config,
    save_config,
    to_dict,
    to_yaml,
)
from sgn.utils import SGNError


def test_profiles_ship_and_load():
    assert {"smoke", "cpu", "gpu"} <= set(available_profiles())
    gpu = load_config("gpu")
    # the paper's scale
    assert (gpu.data.sample_rate, gpu.data.segment_samples, gpu.model.n_fft, gpu.model.hop, gpu.model.warped_bins) == (
        11025, 65535, 1022, 256, 256)


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_yaml_round_trip(name, tmp_path):
    config = load_config(name)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert from_dict(TrainConfig, yaml.safe_load(to_yaml(config))) == config


def test_overrides_typed():
    config = apply_overrides(load_config("smoke"), ["optim.lr=3e-4", "model.depth=2", "data.n_sources=1-3",
                                                     "model.gumbel=true", "optim.warmup_steps=0"])
    assert config.optim.lr == 3e-4 and config.model.depth == 2 and config.data.n_sources == "1-3"
    assert config.model.gumbel is True
    assert apply_overrides(config, ["data.n_sources=2"]).data.n_sources == "2"
    assert apply_overrides(config, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize("override,message", [
    ("model.widht=3", "unknown key 'model.widht'"),
    ("nope.x=1", "unknown key 'nope'"),
    ("model.depth=two", "model.depth expects int"),
    ("model.gumbel=3", "model.gumbel expects bool"),
    ("model=3", "unknown key 'model'"),
    ("lr", "expected key=value"),
])
def test_override_errors(override, message):
    with pytest.raises(SGNError, match=message):
        apply_overrides(load_config("smoke"), [override])


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(SGNError, match="unknown key 'optim.learning_rate'"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("optim: [\n")
    with pytest.raises(SGNError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(SGNError, match="no profile 'nosuch'"):
        load_config("nosuch")


def test_overrides_as_a_typed_mapping():
    config = apply_overrides(load_config("smoke"), {"optim.lr": 0.01, "model.grouping": False, "data.n_sources": "1-4"})
    assert config.optim.lr == 0.01 and config.model.grouping is False and config.data.n_sources == "1-4"
    with pytest.raises(SGNError, match="model.depth expects int"):
        apply_overrides(load_config("smoke"), {"model.depth": "deep"})
    with pytest.raises(SGNError, match="unknown key 'model.nope'"):
        apply_overrides(load_config("smoke"), {"model.nope": 1})


def test_to_dict_is_plain():
    data = to_dict(load_config("cpu"))
    assert isinstance(data["model"], dict) and data["model"]["arch"] == "sgn"


def assert_one_clear_line(err: SGNError, *names: str) -> None:
    """The message is one short line that names every one of ``names`` (a key, a file)."""
    message = str(err)
    assert "\n" not in message and len(message) < 300, message
    for name in names:
        assert name in message, (name, message)


@pytest.mark.parametrize("override", [
    "optim.batch_size=0", "optim.batch_size=-3", "optim.batch_size=10000000", "optim.lr=-1e-3", "optim.lr=0",
    "optim.lr=.nan", "optim.lr=nan", "optim.lr=inf", "optim.lr=-.inf", "optim.weight_decay=-0.1",
    "optim.max_steps=0", "optim.max_steps=-5", "optim.warmup_steps=-1", "optim.min_lr_ratio=1.5",
    "optim.min_lr_ratio=-0.1", "optim.grad_clip=0", "eval_every=0", "log_every=0", "log_every=-1", "seed=-1",
    "data.num_workers=-1", "data.segment_samples=10", "data.segment_samples=0", "data.segment_samples=100",
    "data.segment_samples=" + "9" * 400, "data.sample_rate=0", "data.sample_rate=1000000", "data.gain_min=0",
    "data.gain_max=0.1", "data.gain_max=.inf", "data.val_mixtures=0", "data.n_sources=0", "data.n_sources=3-1",
    "data.n_sources=two", "data.n_sources=-2", "data.n_sources=1-", "data.index=''", "data.index=" + "x" * 4097,
    "model.hop=0", "model.hop=255", "model.n_fft=0", "model.n_fft=8", "model.warped_bins=1", "model.width=33",
    "model.heads=3", "model.heads=0", "model.depth=-1", "model.mlp_ratio=0", "model.gumbel_tau=0",
    "model.tokens_per_class=0", "model.unet_levels=0", "model.arch=transformer", "loss.mask=l2",
    "loss.ce_weight=-1", "loss.bce_weight=.nan",
])
def test_out_of_range_values_are_refused(override):
    key = override.partition("=")[0]
    with pytest.raises(SGNError) as info:
        apply_overrides(load_config("smoke"), [override])
    assert_one_clear_line(info.value, key, "expected")


@pytest.mark.parametrize("section,name,value", [
    ("optim", "lr", -1.0), ("optim", "batch_size", 0), ("data", "sample_rate", 0), ("model", "hop", 0),
    ("model", "arch", "mlp"), ("optim", "lr", "fast"),
])
def test_a_config_built_in_python_is_checked_too(section, name, value):
    import dataclasses

    config = load_config("smoke")
    with pytest.raises(SGNError) as info:
        dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: value})})
    assert_one_clear_line(info.value, f"{section}.{name}")


def test_every_shipped_profile_is_within_range():
    for name in available_profiles():
        load_config(name).check()


BOMB_LEVELS = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f'{b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]' for a, b in zip("abcdefgh", "bcdefghi")]
BILLION_LAUGHS = "\n".join(BOMB_LEVELS) + "\n"  # 72 aliases, 9**9 values once expanded


@pytest.mark.parametrize("content,message", [
    ("optim:\n  lr: &x [*x]\n", "refers to the value that contains it"),
    ("optim:\n  " + BILLION_LAUGHS.replace("\n", "\n  ") + "lr: *i\n", "expand to more than"),
    ("data:\n  index: " + "[" * 60 + "]" * 60 + "\n", "nested more than"),
    # refused by libyaml's own depth limit where it is installed, else by read_yaml's
    ("data:\n  index: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than|maximum nesting depth"),
    ("optim:\n  lr: '" + "y" * 500_000 + "'\n", "optim.lr expects float"),
    ("optim:\n  lr: [" + "1," * 10_000 + "1]\n", "optim.lr expects float"),
    ("data: {index: [" + ",".join(["0"] * 200_000) + "]}\n", "expand to more than"),
    ("optim: " + "x" * (1 << 20) + "\n", "over 1048576 bytes"),
    (b"\xff\xfe\x00o\x00p\x00t", "not UTF-8 text"),
    ("optim:\n  lr: \x00\n", "not valid YAML"),
    ("optim: [\n", "not valid YAML"),
    ("- 1\n- 2\n", "top level expects a mapping"),
    ("optim: 3\n", "optim expects a mapping"),
    ("1: 2\nx: 3\n", "unknown key"),
    ("--- {}\n--- {}\n", "not valid YAML"),
    ("optim: !!python/object:os.system {}\n", "not valid YAML"),
    ("optim:\n  lr: -0.5\n", "optim.lr is -0.5"),
])
def test_hostile_config_files_give_one_line(tmp_path, content, message):
    import time

    path = tmp_path / "hostile.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.perf_counter()
    with pytest.raises(SGNError, match=message) as info:
        load_config(path)
    assert time.perf_counter() - start < 5
    assert_one_clear_line(info.value, str(path))


@pytest.mark.parametrize("content,message", [
    (BILLION_LAUGHS, "expand to more than"), ("a: &x [*x]\n", "refers to the value"),
    ("a: " + "[" * 5000 + "]" * 5000, "nested more than"),
])
def test_pure_python_yaml_loader_is_bounded_too(tmp_path, monkeypatch, content, message):
    """Where libyaml is missing, PyYAML's own loader gets the same limits."""
    import sgn.utils

    monkeypatch.setattr(sgn.utils, "YAML_LOADER", yaml.SafeLoader)
    (tmp_path / "c.yaml").write_text(content)
    with pytest.raises(SGNError, match=message) as info:
        load_config(tmp_path / "c.yaml")
    assert_one_clear_line(info.value, str(tmp_path / "c.yaml"))


@pytest.mark.parametrize("content", [BILLION_LAUGHS, "grid: &g {x: *g}\n", "a: " + "[" * 100 + "]" * 100])
def test_sweep_grids_refuse_alias_bombs(tmp_path, content):
    from sgn.lab.sweep import load_grid

    (tmp_path / "grid.yaml").write_text(content)
    with pytest.raises(SGNError) as info:
        load_grid(tmp_path / "grid.yaml")
    assert_one_clear_line(info.value, str(tmp_path / "grid.yaml"))


@pytest.mark.parametrize("override,message", [
    ("data.index=" + BILLION_LAUGHS.replace("\n", ", ").join("{}"), "expand to more than"),
    ("data.index=&x [*x]", "refers to the value"),
    ("data.index=" + "[" * 40 + "]" * 40, "nested more than"),
    ("data.index=" + "x" * 5000, "expected at most 4096"),
    ("x" * 5000 + "=1", "unknown key"),
    ("=" * 5000, "expected key=value"),
    ("model.depth=[1, 2]", "model.depth expects int"),
])
def test_hostile_overrides_give_one_line(override, message):
    with pytest.raises(SGNError, match=message) as info:
        apply_overrides(load_config("smoke"), [override])
    assert_one_clear_line(info.value)


def test_errors_never_echo_a_whole_value():
    with pytest.raises(SGNError) as info:
        from_dict(TrainConfig, list(range(1_000_000)))
    assert_one_clear_line(info.value, "top level expects a mapping")
    with pytest.raises(SGNError) as info:
        from_dict(TrainConfig, {"optim": {"lr": "y" * 1_000_000}})
    assert_one_clear_line(info.value, "optim.lr")
    with pytest.raises(SGNError) as info:
        from_dict(TrainConfig, {"z" * 1_000_000: 1})
    assert_one_clear_line(info.value, "unknown key")
