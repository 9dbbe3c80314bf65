"""tpsim.plan: tensor, data and pipeline parallelism side by side, in bytes, bytes of memory and seconds.

pipeline.py  GPipe and 1F1B schedules run stage by stage; the bubble (p - 1) / (m + p - 1)
dp.py        the data-parallel gradient all-reduce, on the mesh's "dp" dim, through the engine
pp.py        the pipeline's activation sends, stage boundary by boundary, through the engine
layout.py    one TP x DP x PP layout: traffic, memory and time per device of a training step
compare.py   every layout of a model on n devices, ranked by predicted step time
recompute.py activation recomputation in the simulated step and memory; the breakdown; MFU / HFU

The closed-form time model (issue 14), beside the simulation:

activations.py  activation bytes per layer, tensor by tensor (Korthikanti et al. 2022)
memory_train.py parameters, 16 B/param mixed-precision Adam, ZeRO-1, activations held
kernels.py      one layer's GEMMs (m, n, k) and memory-bound passes, unfused or fused
flops.py        Megatron's FLOP counts (Narayanan et al. 2021), MFU and HFU
cluster.py      DGX nodes: NVSwitch and NICs on every rail; the all-reduce's algorithm and time
nccl_model.py   NCCL's ring, tree and NVLS priced as its tuner does: latency + bytes / bandwidth
iteration.py    one iteration priced by tpsim.efficiency: time broken down, tokens/s, MFU, memory
validate.py     predictions against Megatron-LM's published runs (benchmarks/validate_megatron.py)
"""

from tpsim.plan.compare import compare, enumerate_layouts
from tpsim.plan.layout import OPTIMIZER_BYTES, Layout, LayoutError, analyse_layout, check_layout
from tpsim.plan.pipeline import PipelineError, bubble_fraction, simulate

__all__ = [
    "OPTIMIZER_BYTES",
    "Layout",
    "LayoutError",
    "PipelineError",
    "analyse_layout",
    "bubble_fraction",
    "check_layout",
    "compare",
    "enumerate_layouts",
    "simulate",
]
