"""The reference: tpsim's layers on real torch.distributed, one process per rank.

launch.py          backend choice, spawn / torchrun, process groups with timeouts, RankFailed
launch_watch.py    the parent's watch over spawned ranks: results, the failed rank named, a hang's stacks
comm.py            Comm: one rank's collectives (native dist.* or tpsim's schedules), byte counters
comm_layout.py     a call's tensor as rows on the wire (the cut dim first) and back
schedule_exec.py   runs a tpsim Schedule over isend/irecv, reducing in the engine's order
record.py          CallRecord: every collective a rank issued, and its comparison with a tpsim trace
preflight.py       ranks compare (op, shape, dtype) before a collective: a clear error, not a hang
staging.py         gloo with CUDA tensors: which ops go through the CPU
smoke.py           the smallest entry point: `python -m reference.smoke`, or under torchrun
rmsnorm.py rope.py swiglu.py gqa_qkv.py gqa.py llama.py
                   the Llama layers, mirrors of tpsim/nn's; llama_cases.py: their checker cases
decode.py          prefill and decode with a KV cache (tpsim/serve/decode.py's mirror), run_decode per rank
gpt_stage.py pipeline_stages.py
                   a GPT over pipeline stages (send/recv between stages, the embedding group's all-reduce),
                   mirrors of tpsim/nn's

Not installed with the wheel: run from a checkout, `python -m reference.<module>`.
"""

from reference.backend import Backend, LaunchError, choose_backend
from reference.launch import (
    RankContext,
    RankFailed,
    RunTimeout,
    main,
    process_group,
    run,
    spawn,
)

__all__ = [
    "Backend",
    "LaunchError",
    "RankContext",
    "RankFailed",
    "RunTimeout",
    "choose_backend",
    "main",
    "process_group",
    "run",
    "spawn",
]
