"""tpsim.bugs: silent tensor-parallel bugs as named mutations of the correct layers, and their detector.

The worst TP bugs do not crash: the loss is quietly wrong.  Each mutation here subclasses one
correct layer of tpsim.nn (one of them a whole pipelined GPT) and overrides one method or swaps one
region; `detect` runs it sharded against the unsharded truth and names every tensor that differs.

    patch.py      swap (one region for a call) and relabel (claim a placement, move nothing)
    linear.py     row bias on every rank, mean in the SP reduce-scatter, input_is_parallel fed a full x,
                  SP row bias grad unreduced, column-parallel dx unreduced (f without its backward)
    norm.py       SP LayerNorm grads never all-reduced
    gqa.py        GQA's replicated KV heads' weight grads never all-reduced over the ranks sharing them
    rope.py       RoPE on a sequence shard, and positions restarting at zero on every shard
    loss.py       vocab padding unmasked, uneven shard padding, label smoothing averaged per rank
    grad_norm.py  the global grad norm, and the one that counts replicated grads t times
    pipeline.py   a GPT over two pipeline stages whose embedding group never all-reduces the tied copies
    detect.py     detect(): outputs, every grad and the grad norm against the truth, by name
    catalogue.py  CATALOGUE: every mutation with its source, symptom and the tensors that catch it

    from tpsim.bugs import BY_NAME
    print(BY_NAME["row_bias_every_rank"].detect(world_size=2).format())
"""

from tpsim.bugs.catalogue import BY_NAME, CATALOGUE, SKIPPED, Mutation
from tpsim.bugs.detect import Finding, Inputs, Report, compare, detect, run
from tpsim.bugs.grad_norm import double_counted_grad_norm, grad_norm

__all__ = [
    "BY_NAME", "CATALOGUE", "SKIPPED", "Finding", "Inputs", "Mutation", "Report", "compare", "detect",
    "double_counted_grad_norm", "grad_norm", "run",
]
