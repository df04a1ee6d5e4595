"""Datasheet estimates for targets nobody has measured yet: a roofline (derated peak FP16 throughput and memory
bandwidth) plus a per-layer overhead, per *fused* kernel under TensorRT's documented fusions (``hw.fusion``), keyed
exactly as a profile measured on the device would be, so a measured one drops in without code changes. Every
profile made here says ``source: estimated`` and lists the figures it used and where they come from. A measured
profile made on the device replaces it."""

from __future__ import annotations

from .. import __version__
from .fusion import TENSORRT_RULES, rule_names
from .profile import SCHEMA_VERSION, Profile

# Assumptions shared by all estimates (not datasheet figures; stated in every profile that uses them).
ASSUMPTIONS = {
    "compute_efficiency": 0.15,  # small convs at batch 1 reach a small fraction of tensor-core peak
    "memory_efficiency": 0.6,
    "layer_overhead_ms": 0.015,  # kernel launch + synchronisation per fused layer under TensorRT
    "network_overhead_ms": 0.05,  # enqueue + copy in/out of a batch-1 request
    "precision": "fp16",
}

# GPU FP16 dense tensor throughput is derived from NVIDIA's published sparse-INT8 GPU TOPS of the Orin Nano
# (40 TOPS, 8 SMs at 625 MHz): 40e12 / (8 * 625e6) = 8000 sparse INT8 ops/clk/SM -> 4000 dense INT8 -> 2000 dense
# FP16 FLOP/clk/SM; the other modules scale by SM count and GPU clock (same GA10B SM).
JETSONS = {
    "jetson-orin-nano-8gb": {
        "device": {"name": "NVIDIA Jetson Orin Nano 8GB", "soc": "Orin (GA10B GPU, 8 SMs, 1024 CUDA cores, "
                   "32 Tensor Cores)"},
        "gpu_clock_mhz": 625, "sms": 8, "bandwidth_gbs": 68.0, "power_mode": {"nvpmodel_name": "15W"},
        "sources": ["NVIDIA Jetson Orin Nano Series data sheet: 1024-core Ampere GPU with 32 Tensor Cores, GPU max "
                    "625 MHz, 40 TOPS (sparse INT8), 8GB 128-bit LPDDR5 68 GB/s",
                    "JetPack 6.1+ 'Super' mode (1020 MHz, 102 GB/s, 67 TOPS) is NOT what this estimate assumes"],
    },
    "jetson-orin-nx-16gb": {
        "device": {"name": "NVIDIA Jetson Orin NX 16GB", "soc": "Orin (GA10B GPU, 8 SMs, 1024 CUDA cores, "
                   "32 Tensor Cores)"},
        "gpu_clock_mhz": 918, "sms": 8, "bandwidth_gbs": 102.4, "power_mode": {"nvpmodel_name": "25W"},
        "sources": ["NVIDIA Jetson Orin NX Series data sheet: 1024-core Ampere GPU with 32 Tensor Cores, GPU max "
                    "918 MHz, 100 TOPS (sparse INT8, GPU + 2 DLA), 16GB 128-bit LPDDR5 102.4 GB/s"],
    },
    "jetson-agx-orin-64gb": {
        "device": {"name": "NVIDIA Jetson AGX Orin 64GB", "soc": "Orin (GA10B GPU, 16 SMs, 2048 CUDA cores, "
                   "64 Tensor Cores)"},
        "gpu_clock_mhz": 1300, "sms": 16, "bandwidth_gbs": 204.8, "power_mode": {"nvpmodel_name": "MAXN"},
        "sources": ["NVIDIA Jetson AGX Orin Series data sheet: 2048-core Ampere GPU with 64 Tensor Cores, GPU max "
                    "1.3 GHz, 275 TOPS (sparse INT8, GPU + 2 DLA), 64GB 256-bit LPDDR5 204.8 GB/s"],
    },
}
FP16_FLOP_PER_CLK_PER_SM = 2000


def estimated_profile(name: str) -> Profile:
    spec = JETSONS[name]
    peak_gflops = FP16_FLOP_PER_CLK_PER_SM * spec["sms"] * spec["gpu_clock_mhz"] * 1e6 / 1e9
    fallback = {"kind": "roofline", "peak_gflops": peak_gflops, "bandwidth_gbs": spec["bandwidth_gbs"],
                "compute_efficiency": ASSUMPTIONS["compute_efficiency"],
                "memory_efficiency": ASSUMPTIONS["memory_efficiency"],
                "layer_overhead_ms": ASSUMPTIONS["layer_overhead_ms"]}
    return Profile(
        name=name, source="estimated", device=spec["device"],
        software={"tensorrt": "not measured (estimate)", "jetpack": "6 (assumed)"},
        measurement={"tool": "none: datasheet roofline", "precision": ASSUMPTIONS["precision"], "batch": 1,
                     "statistic": "estimate"},
        kernels={}, fallback=fallback, overhead_ms=ASSUMPTIONS["network_overhead_ms"],
        calibration={"default": {"model": "affine", "coef": {"kernels_ms": 1.0,
                                                              "1": ASSUMPTIONS["network_overhead_ms"]}}},
        fusion={"rules": rule_names(TENSORRT_RULES),
                "source": "assumed: TensorRT developer guide, layer fusions (not detected: nobody measured)"},
        power_mode=spec["power_mode"],
        estimate={"peak_fp16_gflops": peak_gflops, "derivation": (
            f"{FP16_FLOP_PER_CLK_PER_SM} dense FP16 FLOP/clk/SM x {spec['sms']} SMs x {spec['gpu_clock_mhz']} MHz; "
            "per-SM rate from the Orin Nano's 40 sparse INT8 TOPS at 625 MHz on 8 SMs (sparse/2 = dense INT8, "
            "/2 = dense FP16)"), "bandwidth_gbs": spec["bandwidth_gbs"], "assumptions": ASSUMPTIONS,
            "sources": spec["sources"], "made_by": f"pcl-edge {__version__} pcl_edge.hw.roofline"},
        schema_version=SCHEMA_VERSION)
