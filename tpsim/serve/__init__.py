"""tpsim.serve: tensor parallelism for inference, planned from a Llama-style config.

kv_cache.py    weights and KV cache per device (KV heads split or replicated), the tokens that fit
allreduce.py   decode's small all-reduces: one-shot, two-shot and ring, timed on a topology
plan.py        serve_plan(): TP degrees ranked by per-token decode latency and by throughput
validate.py    report(): decode latency of Llama-3 70B beside published NIM and vLLM measurements
"""

from tpsim.serve.allreduce import allreduce_times
from tpsim.serve.kv_cache import kv_cache_bytes_per_token, max_cached_tokens, weight_bytes
from tpsim.serve.plan import serve_plan

__all__ = ["allreduce_times", "kv_cache_bytes_per_token", "max_cached_tokens", "serve_plan", "weight_bytes"]
