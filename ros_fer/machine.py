"""What machine a figure or a parity check was measured on: CPU model, the instruction-set extensions that
change numerics and speed (AVX2, AVX-512, VNNI, AMX), cores, thread settings and the GPU."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# /proc/cpuinfo flag -> the name we report. VNNI decides whether onnxruntime's u8s8 int8 kernels saturate.
ISA_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}


def _cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict:
    """CPU model and the reported ISA flags from the text of /proc/cpuinfo (the first processor's entry)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    isa = [name for flag, name in ISA_FLAGS.items() if flag in flags]
    return {"model": model, "isa": isa, "vnni": "avx512_vnni" in flags or "avx_vnni" in flags}


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    info = parse_cpuinfo(_cpuinfo_text())
    info["model"] = info["model"] or platform.processor() or platform.machine()
    info["arch"] = platform.machine()
    info["cores"] = os.cpu_count()
    return info


def native_bf16(isa=None) -> bool:
    """Whether the CPU computes bf16 natively (AMX or AVX512-BF16): elsewhere bf16 is emulated (torch) or
    quietly run in fp32 (OpenVINO). `isa`: a flag list; None: this CPU's."""
    isa = cpu_info()["isa"] if isa is None else isa
    return "amx_bf16" in isa or "avx512_bf16" in isa


def int8_saturates(isa=None) -> bool:
    """Whether this CPU's int8 dot products (u8 x s8 pairs summed in int16: AVX2, AVX-512 without VNNI)
    saturate for 8-bit weights, as VNNI's and AMX's int32 sums cannot: 7-bit weights are needed there.
    `isa`: a flag list; None: this CPU's."""
    isa = cpu_info()["isa"] if isa is None else isa
    return not any(flag in isa for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def flush_denormals() -> bool:
    """From now on this thread, and the threads it starts later (they inherit its floating-point mode), treat
    denormal floats (below ~1.2e-38 in fp32) as zero: x86's FTZ and DAZ, through torch. A denormal costs a
    CPU tens to hundreds of cycles per operation. Whether a process ran with the flags depended on what it
    had run before (torch's first matrix product sets them on its thread), so the same YOLO on OpenVINO took
    82-108 ms in a bare process and 47-64 ms with them, on machine A (README). Inference only: no feature
    moves at that scale. Returns whether the CPU supports it."""
    import torch

    return bool(torch.set_flush_denormal(True))


def describe_cpu() -> str:
    """One line, e.g. 'AMD EPYC (x86_64, 2 cores; avx2 fma; no VNNI)'."""
    info = cpu_info()
    isa = " ".join(info["isa"]) or "no AVX2"
    return f"{info['model']} ({info['arch']}, {info['cores']} cores; {isa}; {'VNNI' if info['vnni'] else 'no VNNI'})"


def machine() -> dict:
    """The machine for a benchmark's JSON: CPU, ISA flags, cores, thread settings and the GPU if any."""
    import torch

    info = dict(cpu_info())
    info["torch_threads"] = torch.get_num_threads()
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS", "")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_driver"] = gpu_driver()
        info["cuda_runtime"] = torch.version.cuda
    return info


def gpu_driver() -> str:
    """The NVIDIA driver's version as nvidia-smi reports it (e.g. 580.159.04), or why it is unknown."""
    import subprocess

    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown (nvidia-smi: {type(exc).__name__})"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown (nvidia-smi printed nothing)"
