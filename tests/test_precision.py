"""`dtype="auto"` picks bf16 only where the device computes it natively; explicit emulated requests warn."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from real3d import precision
from real3d.backends.neural import NeuralBackend, NeuralConfig
from real3d.pipeline import AnimateOptions

AVX2_FLAGS = "fpu sse2 avx avx2 fma f16c bmi2"
SPR_FLAGS = AVX2_FLAGS + " avx512f avx512bw avx512_bf16 amx_bf16 amx_tile avx512_fp16"


def _cpu(
    monkeypatch,
    tmp_path: Path,
    capability: str,
    flags: str,
    machine: str = "x86_64",
    key: str = "flags",
) -> None:
    """Pretend to run on a CPU with this torch kernel level and these /proc/cpuinfo flags."""
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    monkeypatch.setattr(precision, "cpu_flags", lambda: precision.read_cpu_flags(info))
    monkeypatch.setattr(precision.torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)


def test_cpuinfo_flags_are_parsed(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : avx2 avx512_bf16\nbugs : spectre\nprocessor : 1\nflags : avx2 amx_bf16\n")
    assert precision.read_cpu_flags(info) == {"avx2", "avx512_bf16", "amx_bf16"}
    assert precision.read_cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(
    "capability, flags",
    [
        ("AVX2", AVX2_FLAGS),  # a typical laptop: no bf16 instructions
        (
            "AVX512",
            AVX2_FLAGS + " avx512f avx512bw",
        ),  # Skylake-X / Ice Lake: AVX-512 without bf16
        (
            "AVX2",
            SPR_FLAGS,
        ),  # bf16 CPU forced to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
        ("DEFAULT", ""),
    ],
)
def test_auto_never_picks_bf16_without_native_support(monkeypatch, tmp_path, capability, flags):
    _cpu(monkeypatch, tmp_path, capability, flags)
    cap = precision.device_capability("cpu")
    assert not cap.native_bf16 and cap.capability == capability
    assert precision.auto_dtype("cpu") == "float32"
    assert precision.resolve_dtype("auto", "cpu") == "float32"
    assert "emulated" in cap.describe()


def test_onednn_capped_below_bf16_is_emulated(monkeypatch, tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 sends bf16 convs to ATen's reference path (measured ~100x slower): not native."""
    _cpu(monkeypatch, tmp_path, "AVX512", SPR_FLAGS)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.auto_dtype("cpu") == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert precision.auto_dtype("cpu") == "bfloat16"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_picks_bf16_on_native_bf16_cpus(monkeypatch, tmp_path, flag):
    _cpu(monkeypatch, tmp_path, "AVX512", f"{AVX2_FLAGS} avx512f {flag}")
    assert precision.resolve_dtype("auto", "cpu") == "bfloat16"
    assert flag in precision.device_capability("cpu").describe()


def test_arm_bf16_extension_is_native(monkeypatch, tmp_path):
    _cpu(
        monkeypatch,
        tmp_path,
        "DEFAULT",
        "fp asimd asimdhp bf16 i8mm",
        machine="aarch64",
        key="Features",
    )
    cap = precision.device_capability("cpu")
    assert cap.native_bf16 and cap.native_fp16
    _cpu(monkeypatch, tmp_path, "DEFAULT", "fp asimd", machine="aarch64", key="Features")
    assert precision.auto_dtype("cpu") == "float32"


def test_explicit_emulated_bf16_runs_as_asked_with_a_warning(monkeypatch, tmp_path, caplog):
    _cpu(monkeypatch, tmp_path, "AVX2", AVX2_FLAGS)
    with caplog.at_level(logging.WARNING, logger="real3d.precision"):
        assert precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"
        assert precision.resolve_dtype("float16", "cpu") == "float16"
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 2
    assert "bfloat16 is emulated" in msgs[0] and precision.EMULATED_SLOWDOWN in msgs[0]
    assert "--dtype auto" in msgs[0]


def test_native_or_float32_requests_do_not_warn(monkeypatch, tmp_path, caplog):
    _cpu(monkeypatch, tmp_path, "AVX512", SPR_FLAGS)
    with caplog.at_level(logging.WARNING, logger="real3d.precision"):
        assert precision.resolve_dtype("bfloat16", "cpu") == "bfloat16"
        assert precision.resolve_dtype("float16", "cpu") == "float16"
        _cpu(monkeypatch, tmp_path, "AVX2", AVX2_FLAGS)
        assert precision.resolve_dtype("float32", "cpu") == "float32"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match="use auto, float32"):
        precision.resolve_dtype("int8", "cpu")


@pytest.mark.parametrize("bf16, expected", [(True, "bfloat16"), (False, "float32")])
def test_cuda_follows_the_gpu(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda idx=0: (8, 0) if bf16 else (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda idx=0: "Fake GPU")
    seen = {}

    def is_bf16_supported(including_emulation=True):
        seen["emulation"] = including_emulation
        return bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert precision.auto_dtype("cuda") == expected
    assert seen["emulation"] is False  # emulated bf16 (pre-Ampere) must not count
    cap = precision.device_capability("cuda:0")
    assert cap.native_fp16 and "sm_" in cap.capability


def test_cuda_unavailable_is_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.auto_dtype("cuda") == "float32"


def test_auto_is_the_default_everywhere():
    assert NeuralConfig().dtype == "auto"
    assert AnimateOptions(source="a.jpg", output="b.mp4").dtype == "auto"


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_neural_backend_autocast_resolves_auto(monkeypatch, tmp_path, native, expected):
    """The backend's autocast follows the resolution: bf16 autocast on a native CPU, none on an AVX2 one."""
    _cpu(
        monkeypatch,
        tmp_path,
        "AVX512" if native else "AVX2",
        SPR_FLAGS if native else AVX2_FLAGS,
    )
    backend = NeuralBackend.__new__(NeuralBackend)  # only config and device matter to _autocast
    backend.config, backend.device = NeuralConfig(dtype="auto"), torch.device("cpu")
    with backend._autocast():
        on = torch.is_autocast_enabled("cpu")
        got = torch.get_autocast_dtype("cpu") if on else None
    assert got == expected


def test_doctor_reports_capability_threads_and_auto(monkeypatch, tmp_path, capsys):
    from real3d.cli import main

    _cpu(monkeypatch, tmp_path, "AVX2", AVX2_FLAGS)
    try:
        main(["doctor"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "AVX2, bf16 emulated" in out
    assert f"{torch.get_num_threads()} (of" in out
    line = next(x for x in out.splitlines() if "--dtype auto (CPU)" in x)
    assert "float32" in line and "warns" in line
