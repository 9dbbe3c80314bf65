"""tpsim.plan: tensor, data and pipeline parallelism side by side, in bytes, bytes of memory and seconds.

pipeline.py  GPipe and 1F1B schedules run stage by stage; the bubble (p - 1) / (m + p - 1)
dp.py        the data-parallel gradient all-reduce, on the mesh's "dp" dim, through the engine
pp.py        the pipeline's activation sends, stage boundary by boundary, through the engine
layout.py    one TP x DP x PP layout: traffic, memory and time per device of a training step
compare.py   every layout of a model on n devices, ranked by predicted step time
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
