"""tpsim: tensor parallelism on virtual devices, every byte counted.

mesh.py, device.py      virtual devices on an n-d mesh, with memory and clocks
placement.py            Shard / Replicate / Partial and the torch.chunk layout rule
darray.py               the distributed array; redistribute.py changes its placements
collectives/            schedules as data, the engine (the one door), all_reduce() & co.
topology.py, presets.py links with alpha and beta, and real systems
trace.py, report.py     the ledger of every transfer, its summaries and Chrome trace export
meta.py, dtypes.py      shape-only arrays; bfloat16 through ml_dtypes
"""

from tpsim import errors, presets, topology
from tpsim.collectives import (
    Collective,
    Schedule,
    Step,
    Transfer,
    all_gather,
    all_reduce,
    all_to_all,
    broadcast,
    gather,
    reduce,
    reduce_scatter,
    scatter,
    stepwise,
)
from tpsim.collectives.algorithms import ALGORITHMS, build
from tpsim.darray import DArray, distribute, from_local
from tpsim.dtypes import bfloat16
from tpsim.errors import TpsimError
from tpsim.mesh import Mesh
from tpsim.meta import MetaArray, meta
from tpsim.placement import Partial, Replicate, Shard

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "Collective",
    "DArray",
    "Mesh",
    "MetaArray",
    "Partial",
    "Replicate",
    "Schedule",
    "Shard",
    "Step",
    "TpsimError",
    "Transfer",
    "all_gather",
    "all_reduce",
    "all_to_all",
    "bfloat16",
    "broadcast",
    "build",
    "distribute",
    "errors",
    "from_local",
    "gather",
    "meta",
    "presets",
    "reduce",
    "reduce_scatter",
    "scatter",
    "stepwise",
    "topology",
]
