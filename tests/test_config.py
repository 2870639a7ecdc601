import pytest
import yaml

from sgn.config import TrainConfig, apply_overrides, available_profiles, from_dict, load_config, save_config, to_dict, to_yaml
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
    ("model.widht=3", "unknown key model.widht"),
    ("nope.x=1", "unknown key nope"),
    ("model.depth=two", "model.depth expects int"),
    ("model.gumbel=3", "model.gumbel expects bool"),
    ("model=3", "unknown key model"),
    ("lr", "expected key=value"),
])
def test_override_errors(override, message):
    with pytest.raises(SGNError, match=message):
        apply_overrides(load_config("smoke"), [override])


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(SGNError, match="unknown key optim.learning_rate"):
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
    with pytest.raises(SGNError, match="unknown key model.nope"):
        apply_overrides(load_config("smoke"), {"model.nope": 1})


def test_to_dict_is_plain():
    data = to_dict(load_config("cpu"))
    assert isinstance(data["model"], dict) and data["model"]["arch"] == "sgn"
