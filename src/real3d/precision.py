"""Which network precision runs fast on this machine, and what `dtype="auto"` picks.

bfloat16 autocast halves the neural backend's frame time only where the hardware computes bf16 natively:
x86 CPUs with AVX512-BF16 or AMX-BF16 (oneDNN's bf16 kernels), ARM CPUs with the BF16 extension, CUDA GPUs
of compute capability 8.0 or newer. Elsewhere PyTorch emulates bf16 by converting every element and a
512x512 bf16 matmul on an AVX2 CPU runs at ~1.25 GFLOP/s against ~70-140 GFLOP/s in float32: the frame
becomes ~100x slower, not 2x faster. So:

- `"auto"` (the default everywhere) resolves to `"bfloat16"` where it is native and `"float32"` otherwise;
- an explicit `"bfloat16"` or `"float16"` where that type is emulated still runs as asked (the user may
  want it for a parity check) but logs a warning that names the expected slowdown and the fix
  (`--dtype auto` or `float32`). `real3d doctor` prints the same decision.

The capability comes from `torch.backends.cpu.get_cpu_capability()` (which honours `ATEN_CPU_CAPABILITY`,
so `ATEN_CPU_CAPABILITY=avx2` makes this machine report and resolve like an AVX2 CPU) and the CPU's feature
flags (`/proc/cpuinfo` on Linux; other systems report none, so auto stays float32 there).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16", "float16"]
"""What a user may ask for; `auto` resolves with `resolve_dtype`."""

Resolved = Literal["float32", "bfloat16", "float16"]
"""What the networks run in."""

CPUINFO = Path("/proc/cpuinfo")
"""Where Linux lists the CPU's feature flags."""

BF16_X86_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""x86 flags of native bf16 dot products (oneDNN uses them for matmul/conv)."""
FP16_X86_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
"""x86 flags of native fp16 arithmetic."""
BF16_ARM_FLAGS = frozenset({"bf16"})
"""aarch64 `Features` flag of the BF16 extension (BFDOT/BFMMLA)."""
FP16_ARM_FLAGS = frozenset({"fphp", "asimdhp"})
"""aarch64 flags of half-precision arithmetic."""

ONEDNN_BF16_ISAS = frozenset(
    {
        "ALL",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    }
)
"""Values of `ONEDNN_MAX_CPU_ISA` that still let oneDNN (torch's conv/matmul library) use bf16 dot products;
a lower cap (e.g. AVX2, to mimic an AVX2 CPU) sends bf16 convs to ATen's ~100x slower reference path."""

EMULATED_SLOWDOWN = "~50-100x"
"""Measured bf16-vs-float32 slowdown where bf16 is emulated (512x512 matmul on an AVX2 CPU: 1.25 vs 69-137
GFLOP/s); quoted in the warning."""


@dataclass(frozen=True)
class DeviceCapability:
    """What a device computes natively (what `auto` and the warnings decide from)."""

    device: str
    """torch device type: cpu, cuda, mps, ..."""
    capability: str
    """CPU: torch's kernel level (`get_cpu_capability()`: AVX2, AVX512, DEFAULT, ...); CUDA: the GPU's name
    and compute capability."""
    native_bf16: bool
    """bfloat16 matmuls/convs run in hardware."""
    native_fp16: bool
    """float16 matmuls/convs run in hardware."""
    flags: frozenset[str] = frozenset()
    """The precision-related CPU flags found (empty for GPUs)."""

    def native(self, dtype: str) -> bool:
        """True for float32 and for the reduced types this device computes natively."""
        return (
            dtype == "float32"
            or (dtype == "bfloat16" and self.native_bf16)
            or (dtype == "float16" and self.native_fp16)
        )

    def describe(self) -> str:
        """One line for `real3d doctor` and the benchmarks, e.g. `AVX512, native bf16 (avx512_bf16)`."""
        if self.device != "cpu":
            return f"{self.capability}, bf16 {'native' if self.native_bf16 else 'NOT native'}"
        found = ", ".join(sorted(self.flags))
        bf16 = f"native bf16 ({found})" if self.native_bf16 else "bf16 emulated (slow: auto uses float32)"
        return f"{platform.machine()} {self.capability}, {bf16}"


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags in a /proc/cpuinfo-style file (`flags` / `Features` lines); empty where it is absent."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (read once)."""
    return read_cpu_flags(CPUINFO)


def cpu_capability() -> str:
    """torch's CPU kernel level (`AVX2`, `AVX512`, `DEFAULT`, ...; respects `ATEN_CPU_CAPABILITY`)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # very old torch: treat as plain kernels
        return "DEFAULT"


def device_capability(device: str | torch.device = "cpu") -> DeviceCapability:
    """What `device` computes natively.

    CPU: bf16 is native when torch's kernels run at AVX-512 level (or on ARM), oneDNN is not capped below its
    bf16 ISA (`ONEDNN_MAX_CPU_ISA`) and the CPU has a bf16 dot product (AVX512-BF16, AMX-BF16, ARM BF16). With
    `ATEN_CPU_CAPABILITY=avx2` or `ONEDNN_MAX_CPU_ISA=AVX2` this reports emulated bf16 even on a CPU that has it,
    so benchmarks and `auto` behave like the AVX2 machines they stand in for.
    CUDA: `torch.cuda.is_bf16_supported` without emulation; fp16 is native on every CUDA GPU torch supports."""
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            return DeviceCapability("cuda", "CUDA not available", False, False)
        idx = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(idx)
        try:
            bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation: native from sm_80 (Ampere)
            bf16 = major >= 8
        return DeviceCapability("cuda", f"{torch.cuda.get_device_name(idx)} (sm_{major}{minor})", bf16, True)
    if kind != "cpu":
        return DeviceCapability(kind, kind, False, False)
    cap = cpu_capability()
    flags = cpu_flags()
    arm = platform.machine().lower() in ("aarch64", "arm64")
    if arm:
        bf16_flags, fp16_flags, vector_ok = (
            BF16_ARM_FLAGS & flags,
            FP16_ARM_FLAGS & flags,
            True,
        )
    else:
        bf16_flags, fp16_flags = BF16_X86_FLAGS & flags, FP16_X86_FLAGS & flags
        onednn_cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
        vector_ok = cap.upper().startswith("AVX512") and onednn_cap in ONEDNN_BF16_ISAS
        if onednn_cap != "ALL":
            cap = f"{cap} (oneDNN max {onednn_cap})"
    return DeviceCapability(
        "cpu",
        cap,
        vector_ok and bool(bf16_flags),
        vector_ok and bool(fp16_flags),
        frozenset(bf16_flags | fp16_flags),
    )


def auto_dtype(device: str | torch.device = "cpu") -> Resolved:
    """What `dtype="auto"` runs in on `device`: bfloat16 where native, else float32."""
    return "bfloat16" if device_capability(device).native_bf16 else "float32"


def resolve_dtype(requested: str, device: str | torch.device = "cpu") -> Resolved:
    """The dtype to run for a requested precision: `auto` -> `auto_dtype`; an explicit type is kept, with a
    warning naming the expected slowdown when `device` only emulates it. Raises ValueError for an unknown name."""
    if requested == "auto":
        chosen = auto_dtype(device)
        log.info("precision auto -> %s on %s", chosen, device_capability(device).describe())
        return chosen
    if requested not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    cap = device_capability(device)
    if not cap.native(requested):
        log.warning(
            "%s is emulated on this %s (%s): the networks will run %s slower than float32, not faster. "
            "Use --dtype auto (the default) or float32 unless you need %s itself.",
            requested,
            cap.device,
            cap.describe(),
            EMULATED_SLOWDOWN,
            requested,
        )
    return requested  # type: ignore[return-value]


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's marketing name (`model name` in /proc/cpuinfo), else `platform.processor()` or the machine type."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numpy_simd() -> str:
    """NumPy's highest enabled SIMD dispatch level (AVX512_ICL, X86_V4, X86_V3, ...; follows
    `NPY_DISABLE_CPU_FEATURES`, e.g. `X86_V4,AVX512_ICL,AVX512_SPR` leaves AVX2 + FMA on NumPy >= 2.4)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return "unknown"
    # NumPy >= 2.4 dispatches on x86-64 levels (X86_V4 = AVX-512 SKX, X86_V3 = AVX2 + FMA); older on the names
    v4, v3 = ("X86_V4", "X86_V3") if "X86_V4" in feats else ("AVX512_SKX", "AVX2")
    for level in ("AVX512_SPR", "AVX512_ICL", v4, v3, "SSE42", "ASIMD"):
        if feats.get(level):
            return level
    return "baseline"


def opencv_simd() -> str:
    """OpenCV's highest dispatched SIMD level (`AVX512-SKX`, `AVX2`, ...; follows `OPENCV_CPU_DISABLE`,
    e.g. `AVX512-SKX,AVX512-CLX` leaves AVX2), or `not installed`."""
    try:
        import cv2
    except ImportError:
        return "not installed"
    enabled = [f.lstrip("*") for f in cv2.getCPUFeaturesLine().split() if not f.endswith("?")]
    return enabled[-1] if enabled else "baseline"


def machine_summary() -> str:
    """The line every benchmark prints first: CPU, logical CPUs, torch threads, torch kernel level, bf16,
    NumPy SIMD level (so each figure names the capability it was measured with)."""
    cap = device_capability("cpu")
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.get_num_threads()} threads | "
        f"torch capability {cap.capability}, bf16 {'native' if cap.native_bf16 else 'emulated'} "
        f"(auto -> {auto_dtype('cpu')}) | numpy SIMD {numpy_simd()} | OpenCV SIMD {opencv_simd()}"
    )
