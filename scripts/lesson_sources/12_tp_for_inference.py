# %% [markdown]
# # Lesson 12: TP for inference
#
# Training splits a model because its weights, gradients and optimizer state do not fit.  Serving splits
# it for two other reasons: the **KV cache** (every token of every sequence keeps its keys and values in
# every layer) and **latency** (a decode step reads all the weights to produce one token per sequence, so
# more devices reading in parallel means a faster token).  And a decode step moves tiny messages, so its
# all-reduces are priced by their latency, not their bytes.
#
# The running example: Llama-3 70B (64 query heads, 8 KV heads, 80 layers, bfloat16) on one 8 × H100
# node (tpsim's `dgx-h100` preset).  Everything below is computed by `tpsim.serve` and `tpsim.nn`.

# %%
import numpy as np

from tpsim import Mesh, Replicate, distribute, presets
from tpsim.hardware import device_spec
from tpsim.meta import meta
from tpsim.nn.gqa_qkv import KVLayout
from tpsim.nn.llama import Llama, LlamaBlock
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.report import fmt_bytes, fmt_time, table
from tpsim.serve import kv_cache_bytes_per_token, max_cached_tokens, serve_plan, weight_bytes
from tpsim.serve.allreduce import ALGORITHMS, allreduce_times, by_size
from tpsim.serve.decode import new_cache
from tpsim.serve.generate import block_step, generate, inference
from tpsim.serve.kv_cache import layout
from tpsim.serve.plan import decode_latency

cfg = LLAMA_PRESETS["llama3-70b"]
gpu = device_spec("h100")
node = presets.preset("dgx-h100", 8)
print(f"{cfg.name}: {cfg.parameters() / 1e9:.1f}B parameters, {cfg.num_layers} layers, hidden {cfg.hidden}, "
      f"{cfg.num_heads} query heads, {cfg.num_kv_heads} KV heads of {cfg.head_dim}, {cfg.dtype}")
print(f"device: {gpu.name}, {fmt_bytes(gpu.memory)}, {gpu.memory_bandwidth / 1e12:.2f} TB/s HBM, "
      f"{gpu.flops['bfloat16'] / 1e12:.0f} TFLOP/s bf16 ({gpu.source.split(';')[0]})")
print(f"node: {node.name}: {node.source}")

# %% [markdown]
# ## 1. Heads on ranks
#
# Start small: 8 query heads share 2 KV heads (4 queries per KV head), on t = 2 and t = 4 ranks.  Each rank
# takes n/t query heads and the KV heads those queries read.  `KVLayout.rank_blocks(r)` lists rank r's
# rows of the fused QKV weight, head by head.


# %%
def blocks(lay: KVLayout, rank: int) -> str:
    """Rank `rank`'s heads, as 'q0-3 k0 v0'."""
    q = [h for w, h in lay.rank_blocks(rank) if w == "q"]
    kv = sorted({h for w, h in lay.rank_blocks(rank) if w == "k"})
    return f"q{q[0]}-{q[-1]} " + " ".join(f"k{k} v{k}" for k in kv)


for t in (2, 4):
    lay = KVLayout(num_heads=8, num_kv_heads=2, head_dim=4, tp=t)
    print(f"t = {t}: " + " | ".join(f"rank {r}: {blocks(lay, r)}" for r in range(t))
          + f"   (each KV head on {lay.replicas} rank{'s' if lay.replicas > 1 else ''})")

# %% [markdown]
# At t = 2 the KV heads **split** (one per rank).  At t = 4 there are more ranks than KV heads: each KV
# head is **replicated** on t/g = 2 ranks, each of which serves two of its four queries.  Now Llama-3 70B:

# %%
rows = []
for t in (1, 2, 4, 8, 16):
    lay = layout(cfg, t)
    rows.append([t, lay.n_local, lay.kv_local, f"x{lay.replicas}", blocks(lay, 0), blocks(lay, t - 1)])
print(table(rows, ["t", "q heads/rank", "KV heads/rank", "KV copies", "rank 0", "last rank"],
            f"{cfg.name}: {cfg.num_heads} query heads, {cfg.num_kv_heads} KV heads"))

# %% [markdown]
# The rule: with n query heads, g KV heads and t ranks, each rank holds n/t query heads and
# max(g/t, 1) KV heads; past t = g each KV head is held by t/g ranks.  The t that work divide n and divide
# or are a multiple of g (`tpsim.nn.gqa_qkv.valid_tp`).  At t = 16 each KV head's weights and its **cache**
# are stored twice: that is the cost, priced next.
#
# ## 2. The KV cache per device
#
# Per cached token, each rank keeps K and V of its KV heads in every layer:
# 2 × layers × max(g/t, 1) × head_dim × 2 bytes (bfloat16).

# %%
for t in (1, 8, 16):
    lay = layout(cfg, t)
    print(f"t = {t:>2}: 2 x {cfg.num_layers} x {lay.kv_local} x {cfg.head_dim} x 2 B = "
          f"{fmt_bytes(kv_cache_bytes_per_token(cfg, t))} per token per device")

# %% [markdown]
# What fits is what the weights leave: `max_cached_tokens` takes 90 % of the device's memory (vLLM's
# default `gpu_memory_utilization`), subtracts this rank's weights, and divides by the bytes per token.
# The tokens are summed over sequences: batch × context.

# %%
rows = []
for t in (1, 2, 4, 8, 16):
    tokens = max_cached_tokens(cfg, t, gpu.memory)
    rows.append([t, fmt_bytes(weight_bytes(cfg, t)), fmt_bytes(kv_cache_bytes_per_token(cfg, t)),
                 f"{tokens:,}", tokens // 4096, tokens // 32768])
print(table(rows, ["t", "weights/device", "KV/token/device", "tokens that fit", "seqs of 4k", "seqs of 32k"],
            f"{cfg.name} on {gpu.name}, 90% of {fmt_bytes(gpu.memory)} usable"))

# %% [markdown]
# At t = 1 the 131 GiB of weights do not fit at all.  From t = 2 to t = 8 each doubling halves both the
# weights and the cache per token, so the tokens that fit grow **more** than twice: 10 sequences of 4k
# tokens at t = 2, 355 at t = 8.  At t = 16 (two nodes, or a 16-GPU NVLink domain) the weights halve again
# but the KV cache per token stays at 40 KiB: the replicated KV heads cost a 14 % gain where splitting
# would have given more than 2x.
#
# ## 3. Decode all-reduces are latency-bound
#
# A decode step pushes one token per sequence through the model: the activations are (1, b, h).  Each
# layer all-reduces them twice (after attention, after the MLP).  Here is one layer of Llama-3 70B at t = 8
# decoding one token for b = 4 sequences, shape-only, its all-reduces read from the trace:

# %%
mesh = Mesh(8, topology=node, memory=1 << 62)
block = LlamaBlock(mesh, cfg.hidden, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_hidden, init=None,
                   dtype="bfloat16")
b = 4
cache = new_cache(block.self_attention, b, 4096)
with inference(block):
    block_step(block, distribute(meta((100, b, cfg.hidden), "bfloat16"), mesh, [Replicate()]), cache)
    before = len(mesh.trace.collectives)
    block_step(block, distribute(meta((1, b, cfg.hidden), "bfloat16"), mesh, [Replicate()]), cache)
for c in mesh.trace.collectives[before:]:
    print(f"{c.collective}: {fmt_bytes(c.nbytes)} = b x h x 2 B = {b} x {cfg.hidden} x 2")
per_layer = kv_cache_bytes_per_token(cfg, 8) // cfg.num_layers
print(f"this layer's KV cache on device 0: {fmt_bytes(mesh.devices[0].in_use['kv_cache'])} = {b} sequences x "
      f"{cache.max_len} slots x {per_layer} B (K and V of 1 KV head x {cfg.head_dim} x 2 B); "
      f"{cache.length} tokens cached")

# %% [markdown]
# 64 KiB.  A whole decode step has 2 × 80 such all-reduces plus the embedding's: 161 per generated token.
# How long one takes depends on the algorithm.  `allreduce_times` runs three schedules on the node
# (shape-only) and reads their times from the trace:
#
# - **ring**: 2(t − 1) steps of S/t bytes (NCCL's default for large messages);
# - **one-shot**: 1 step, every rank sends all of S to every other rank;
# - **two-shot**: 2 steps, a direct reduce-scatter then a direct all-gather: ring's bytes in 2 steps.

# %%
sizes = [b * cfg.hidden * 2 for b in (1, 8, 64, 512)] + [4096 * cfg.hidden * 2]
rows = [[fmt_bytes(r["bytes"]), *(fmt_time(r[a]) for a in ALGORITHMS), r["fastest"]]
        for r in by_size(8, node, sizes)]
print(table(rows, ["message", *ALGORITHMS, "fastest"],
            "all-reduce over t = 8, decode b = 1, 8, 64, 512, then a 4096-token prefill "
            "(α-β model at datasheet NVLink bandwidth, α 2 us assumed)"))

# %% [markdown]
# The rule comes from the α-β model: a step costs α plus its bytes over the link.  Decode's messages are
# small, so the α's dominate and the step count decides:

# %%
link = node.links[0]
alpha, beta = presets.NVLINK_ALPHA, link.bandwidth
S, t = cfg.hidden * 2, 8
print(f"b = 1: S = {fmt_bytes(S)}; its bytes over one link take {fmt_time(S / beta)}, one α is "
      f"{fmt_time(alpha)} ({beta / 1e9:.0f} GB/s per direction, datasheet)")
print(f"ring: {2 * (t - 1)} steps -> >= {fmt_time(2 * (t - 1) * alpha)}; one-shot: 1 step but (t-1) S = "
      f"{fmt_bytes((t - 1) * S)} out of each rank; two-shot: 2 steps, 2(t-1)/t S = {fmt_bytes(2 * (t - 1) * S / t)}")
per_token = {a: (2 * cfg.num_layers + 1) * allreduce_times(8, S, node)[a] for a in ALGORITHMS}
print("161 all-reduces per generated token, b = 1 (α-β at datasheet bandwidth): "
      + ", ".join(f"{a} {fmt_time(v)}" for a, v in per_token.items()))

# %% [markdown]
# So: one-shot wins the smallest messages (16 and 128 KiB: b = 1 and 8), two-shot wins from 1 MiB (b = 64)
# through prefill's 64 MiB, and ring, the default for training's large all-reduces, never
# wins on a single node here.  With ring, the all-reduces of one token would cost 4.5 ms; one-shot makes
# them 0.36 ms.  That is why TensorRT-LLM and vLLM ship their own one-shot/two-shot all-reduce kernels.
#
# ## 4. Prefill vs decode, TP vs replicas
#
# `serve_plan` puts it together for every t that fits 8 GPUs, each group of t a replica.  Its model (see
# `tpsim/serve/plan.py`): a decode step reads this rank's weights and KV cache at HBM bandwidth
# (memory-bound roofline at datasheet peak), plus 161 all-reduces with the fastest algorithm; prefill of
# one 4096-token sequence is compute-bound; throughput runs each replica at the largest batch whose KV
# cache fits; no overlap of compute and communication, no batched prefill.

# %%
def plan_table(model: str, mode: str = "peak") -> dict:
    p = serve_plan(model, 8, context=4096, mode=mode)
    rows = []
    for r in p["rows"]:
        if not r["fits"]:
            rows.append([r["tp"], r["replicas"], fmt_bytes(r["weights_per_device"]), 0, "does not fit", *"-" * 4])
            continue
        rows.append([r["tp"], r["replicas"], fmt_bytes(r["weights_per_device"]), r["max_batch"],
                     fmt_time(r["prefill"]), fmt_time(r["latency"]), fmt_time(r["latency_comm"]),
                     f"{r['throughput']:,.0f}", f"{r['throughput'] / 8:,.0f}"])
    print(table(rows, ["t", "replicas", "weights/dev", "max batch", "prefill 4k", "decode, b = 1",
                       "of it comm", "tokens/s, max b", "per GPU"],
                f"{p['model']} on 8 x {p['device']}, 4096-token sequences, mode {p['mode']} "
                f"({'datasheet roofline' if p['mode'] == 'peak' else 'kernel by kernel'}, no overlap)"))
    print(f"by latency: t {p['by_latency']}   by throughput: t {p['by_throughput']}")
    return p


plan70 = plan_table("llama3-70b")

# %% [markdown]
# For the 70B, t = 8 wins both: the latency of one sequence (5.6 ms per token against 21 ms at t = 2,
# since each rank reads an eighth of the weights) **and** the throughput, because at t = 2 the weights
# leave room for only 10 sequences per replica.  Prefill, the time to the first token, falls with t too.
# A model that fits one GPU shows the trade-off more plainly:

# %%
plan8 = plan_table("llama3-8b")

# %% [markdown]
# Eight replicas of Llama-3 8B (t = 1) take 4.6 ms per token; one t = 8 group takes 0.72 ms, 6.5x faster,
# and even a little more throughput per GPU (5,451 tokens/s against 5,011): eight replicas hold eight
# copies of the weights, one t = 8 group holds one, so more memory is left for the KV cache (1122
# sequences against 8 × 114 = 912), and that outweighs the 138 us of all-reduces per step.  Where the time goes, at t = 8 for the 70B:

# %%
print("decode steps of llama3-70b at t = 8, 4096-token context, mode peak: HBM reads at datasheet peak "
      "(roofline), all-reduces α-β at datasheet NVLink bandwidth, no overlap")
for batch in (1, 64, plan70["rows"][-1]["max_batch"]):
    d = decode_latency(cfg, 8, batch, 4096, gpu, node)
    print(f"b = {batch:>3}: {fmt_time(d['seconds'])} per step = {fmt_time(d['compute'])} weights + KV reads "
          f"+ {fmt_time(d['comm'])} all-reduces ({d['allreduce']}); {batch / d['seconds']:,.0f} tokens/s")

# %% [markdown]
# Batching is nearly free while the weights dominate the reads: 64 sequences cost 1.7x one sequence's step
# for 64x the tokens.  The all-reduces stay a small share once they use the right algorithm.
#
# ### Mode realistic: kernel by kernel
#
# Mode peak prices a layer as one roofline call.  `mode="realistic"` (`tpsim serve-plan --realistic`)
# prices each kernel of vLLM's Llama layer (`tpsim/serve/kernels.py`: fused add-RMSNorm, the QKV GEMM,
# rotary, the cache write, attention over the cache, o, fused add-RMSNorm, gate-up, SiLU-and-mul, down)
# with the same efficiency parameters as the training model (`tpsim/efficiency.py`): each kernel pays a
# launch, memory-bound ops reach `memory_fraction` of the bandwidth, and GEMMs pay the wave-quantization
# model.  One layer at t = 8, b = 1:

# %%
from tpsim.efficiency import efficiency_for, memory_time
from tpsim.serve.kernels import layer_kernels

eff = efficiency_for("h100")
rows = []
for k in layer_kernels(cfg, 8, 1, 4096):
    total, alone = k.time(gpu, eff, cfg.dtype), memory_time(gpu, eff, k.bytes_moved(eff))
    rows.append([k.name, fmt_bytes(k.bytes_moved(eff)), fmt_time(alone), fmt_time(total),
                 "compute" if total > alone * (1 + 1e-12) else "memory"])
print(table(rows, ["kernel", "bytes", "launch + bytes", "time", "decided by"],
            f"mode realistic: one layer of {cfg.name} at t = 8, b = 1, 4096 cached tokens, {gpu.name}"))
for mode in ("peak", "realistic"):
    d = decode_latency(cfg, 8, 1, 4096, gpu, node, mode=mode)
    print(f"mode {d['mode']:>9}: {fmt_time(d['seconds'])} per step ({fmt_time(d['comm'])} of it all-reduces)")

# %% [markdown]
# The launches of the small kernels add up (80 layers of them per token).  A decode GEMM has only b
# rows, so its output fills a few tiles and would leave most SMs idle; the realistic model splits it
# along k (split-K, as cuBLAS does for skinny GEMMs) until the SMs are full, and then reading the weights
# decides its time, not its FLOPs ("bytes" above counts split-K's fp32 partial sums too).  The Decode
# validation page (`python -m benchmarks.validate_decode`) sets both modes beside published vLLM and NIM
# measurements, with the error of each.
#
# ## 5. A real decode, on virtual devices
#
# The same code path with numbers in it: a 2-layer Llama (vocab 13, hidden 16, 4 query heads, 2 KV heads)
# prefills a 4-token prompt for 2 sequences and greedily decodes 5 tokens, at t = 1, 2 and 4 (at t = 4
# each KV head is replicated on 2 ranks).  The cache on each rank holds only its KV heads.

# %%
small = LlamaConfig(13, 16, 2, 4, 2, 8, 12, rope_theta=100.0, dtype="float64", name="tiny-llama")
prompt = np.random.default_rng(0).integers(0, small.vocab_size, (4, 2))
print("prompt (s, b):", prompt.T.tolist())
outs = {}
for t in (1, 2, 4):
    model = Llama(Mesh(t), small, seed=1)
    outs[t] = generate(model, prompt, 5)
    kinds = [c.collective for c in model.mesh.trace.collectives]
    print(f"t = {t}: tokens {outs[t].T.tolist()}; KV heads per rank {layout(small, t).kv_local} "
          f"(x{layout(small, t).replicas}); {kinds.count('all_reduce')} all-reduces, "
          f"{kinds.count('all_gather')} all-gathers of the logits")
print("identical at t = 1, 2, 4:", all(np.array_equal(outs[t], outs[1]) for t in (2, 4)))

# %% [markdown]
# 5 steps × (2 layers × 2 + 1 embedding) = 25 all-reduces and one all-gather of the logits per step, so
# every rank takes the same argmax.
#
# ## Summary
#
# - Query heads split t ways; KV heads split while t ≤ g and are replicated t/g times beyond: at t = 16
#   Llama-3 70B stores each KV head twice, and its KV cache per token per device stays at 40 KiB.
# - The KV cache, not the weights, decides the batch: the tokens that fit grow faster than t because the
#   weights shrink too (10 sequences of 4k at t = 2, 355 at t = 8 for the 70B on H100s).
# - Decode all-reduces are b × h × 2 bytes (16 KiB for one sequence): latency-bound.  One-shot wins the
#   smallest, two-shot the rest; ring's 2(t − 1) α's would make them 12x slower per token.
# - TP cuts latency per token (each rank reads 1/t of the weights); replicas of a model that fits give
#   similar throughput per GPU but the latency of t = 1.
#
# ## Exercises

# %%
from tpsim.exercises import lesson12 as ex

ex.kv_per_token_t16

# %%
ex.kv_per_token_t16()  # your prediction in bytes, then run: ex.kv_per_token_t16.run()

# %%
ex.fastest_decode_allreduce

# %%
ex.fastest_decode_allreduce()  # your answer here; ex.fastest_decode_allreduce.solution() shows it

# %%
ex.max_batch_t4

# %%
ex.max_batch_t4()  # your answer here; ex.max_batch_t4.solution() shows the worked answer
