"""Training precision and compilation: bf16 only where the device computes it natively, fp32
elsewhere, and a compile failure that falls back to eager mode with one warning."""

import logging

import pytest
import torch

import sgn.device as device_module
from sgn.config import apply_overrides, from_dict, load_config, to_dict
from sgn.device import attention_kernel, autocast_for, cpu_flags, native_bf16, training_context
from sgn.model import SelfAttentionBlock
from sgn.train import CompiledOrEager, train
from sgn.utils import SGNError

CPU = torch.device("cpu")


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\nbugs\t\t: none\n")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("flags,precision,expect", [
    (set(), "fp32", None), (set(), "auto", None), ({"avx512_bf16"}, "auto", torch.bfloat16),
    ({"amx_bf16"}, "bf16", torch.bfloat16), ({"avx512_bf16"}, "fp32", None),
])
def test_autocast_picks_bf16_only_where_it_is_native(monkeypatch, flags, precision, expect):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_for(precision, CPU)():
        product = a @ b
    assert product.dtype == (expect or torch.float32)


def test_bf16_without_native_support_is_one_line(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx2"})
    assert not native_bf16(CPU)
    with pytest.raises(SGNError, match="precision: bf16 needs native bf16 on cpu") as info:
        autocast_for("bf16", CPU)
    assert "\n" not in str(info.value)


def test_a_run_that_asks_for_unsupported_bf16_writes_nothing(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: set())
    config = apply_overrides(load_config("smoke"), [f"data.index={tiny_synth}", "precision=bf16"])
    with pytest.raises(SGNError, match="precision"):
        train(config, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["fp16", "BF16", 1, None])
def test_precision_is_checked_where_the_config_is_read(value):
    with pytest.raises(SGNError, match="precision"):
        apply_overrides(load_config("smoke"), {"precision": value})


def test_configs_from_before_precision_still_load():
    old = to_dict(load_config("gpu"))
    del old["precision"]
    assert from_dict(type(load_config("gpu")), {**old, "bf16": True}).precision == "auto"
    assert from_dict(type(load_config("gpu")), {**old, "bf16": False}).precision == "fp32"


def test_a_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    calls = []

    def broken_compile(model):
        def compiled(*args):
            calls.append("compiled")
            raise RuntimeError("no C++ compiler\nsecond line")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = torch.nn.Linear(3, 2)
    forward = CompiledOrEager(model)
    x = torch.randn(5, 3)
    with caplog.at_level(logging.WARNING, logger="sgn.train"):
        first, second = forward(x), forward(x)
    assert torch.equal(first, model(x)) and torch.equal(second, model(x))
    assert calls == ["compiled"]  # tried once, then eager
    warnings = [r for r in caplog.records if "torch.compile failed" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


@pytest.mark.parametrize("overrides", [["precision=auto"], pytest.param(["compile=true"], marks=pytest.mark.slow)])
def test_training_runs_with_bf16_and_with_compile(tiny_synth, tmp_path, overrides):
    config = apply_overrides(load_config("smoke"), [f"data.index={tiny_synth}", "optim.max_steps=3", *overrides])
    history = train(config, tmp_path / "run", device="cpu", progress=False)
    assert [row["step"] for row in history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert isinstance(history[-1]["val_sdr"], float)


def _kernel_used(attention: str, precision: str, flags: set, monkeypatch) -> str:
    """Which attention kernel ``attention_kernel`` lets the CPU run: fused (flash) while PyTorch
    may choose it (its switches are global, named after CUDA but read on the CPU too)."""
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    with attention_kernel(attention, precision, CPU)():
        return "fused" if torch.backends.cuda.flash_sdp_enabled() else "math"


@pytest.mark.parametrize("attention,precision,flags,expect", [
    ("auto", "auto", {"avx512_bf16"}, "math"),  # bf16 on a CPU: the math kernel (measured faster)
    ("auto", "auto", set(), "fused"),  # auto precision is fp32 here: PyTorch's choice
    ("auto", "fp32", {"avx512_bf16"}, "fused"),
    ("fused", "bf16", {"avx512_bf16"}, "fused"),
    ("math", "fp32", set(), "math"),
])
def test_attention_kernel_follows_the_precision_on_a_cpu(monkeypatch, attention, precision, flags, expect):
    assert _kernel_used(attention, precision, flags, monkeypatch) == expect
    assert torch.backends.cuda.flash_sdp_enabled()  # the choice is undone on leaving the context


@pytest.mark.parametrize("value", ["flash", "MATH", 0, None])
def test_attention_is_checked_where_the_config_is_read_and_where_it_is_used(value):
    with pytest.raises(SGNError, match="attention") as info:
        apply_overrides(load_config("smoke"), {"attention": value})
    assert "\n" not in str(info.value)
    with pytest.raises(SGNError, match="attention: expected one of"):
        attention_kernel(value, "fp32", CPU)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_math_and_fused_kernels_compute_the_same_attention(monkeypatch, precision):
    """The kernel is a speed choice, not a model change: same outputs and gradients within the precision."""
    monkeypatch.setattr(device_module, "cpu_flags", lambda: {"avx512_bf16"})
    torch.manual_seed(0)
    block = SelfAttentionBlock(dim=32, heads=4, mlp_ratio=2.0)
    x = torch.randn(2, 50, 32)
    results = {}
    for attention in ("fused", "math"):
        block.zero_grad()
        with training_context(precision, attention, CPU)():
            y = block(x)
        y.float().square().mean().backward()
        results[attention] = (y.float().detach(), block.qkv.weight.grad.clone())
    tolerance = 1e-5 if precision == "fp32" else 3e-2
    for fused, math_ in zip(results["fused"], results["math"]):
        assert torch.allclose(fused, math_, atol=tolerance, rtol=tolerance)
