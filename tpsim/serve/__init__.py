"""tpsim.serve: tensor parallelism for inference, planned from a Llama-style config.

kv_cache.py    weights and KV cache per device (KV heads split or replicated), the tokens that fit
allreduce.py   decode's small all-reduces: one-shot, two-shot and ring, timed on a topology
plan.py        serve_plan(): TP degrees ranked by per-token decode latency and by throughput, mode peak
               (a roofline per layer) or realistic (kernel by kernel)
kernels.py     a Llama layer's kernels on one TP rank (vLLM's list), priced by efficiency.py
validate.py    report(): decode latency of Llama-3 70B in both modes beside published NIM and vLLM figures
"""

from tpsim.serve.allreduce import allreduce_times
from tpsim.serve.kv_cache import kv_cache_bytes_per_token, max_cached_tokens, weight_bytes
from tpsim.serve.plan import serve_plan

__all__ = ["allreduce_times", "kv_cache_bytes_per_token", "max_cached_tokens", "serve_plan", "weight_bytes"]
