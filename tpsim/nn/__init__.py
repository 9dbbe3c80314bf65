"""tpsim.nn: Megatron's tensor-parallel layers on virtual devices, forward and backward.

    module.py     Module: parameters as DArrays, explicit backward, memory by category
    regions.py    copy_to / reduce_from, gather_from / scatter_to, the sequence-parallel pair
    layout.py     on_tp and grad_placements: where outputs and parameter gradients live
    ops.py        local ops on one shard, with FLOPs and bytes, on data or shapes only
    init.py       seeded global weights, so sharded and unsharded models hold the same numbers
    linear.py     ColumnParallelLinear, RowParallelLinear
    mlp.py        ParallelMLP
    attention.py  ParallelAttention (QKV split by heads, row-parallel output projection)
    embedding.py  VocabParallelEmbedding, VocabParallelLogits (tied output layer), vocab padding
    loss.py       VocabParallelCrossEntropy (max, sum-exp and target-logit all-reduces)
    norm.py       LayerNorm (replicated; sharded by sequence under SP)
    dropout.py    Dropout and the RNG tracker (replicated and TP-local streams)
    block.py      TransformerBlock (one pre-LN GPT layer)
    gpt.py        GPT, and analyse(): traffic, time and memory of a training step, shapes only
    gpt_stage.py  GPTStage: one pipeline stage's part of a GPT (pre_process / post_process)
    pipeline_stages.py PipelinedGPT: a GPT over pp stages, GPipe, sends and the embedding group
    config.py     GPT configurations and the Korthikanti activation-memory formula
    rmsnorm.py    RMSNorm (replicated; sharded by sequence under SP)
    rope.py       rotary position embeddings at global positions (uneven sequence shards, KV offsets)
    swiglu.py     SwiGLUMLP: gate and up fused column-parallel, down row-parallel
    fused.py      fused weights laid out per TP rank (gate/up, QKV)
    gqa_qkv.py    GQA's fused QKV projection: KV heads split or replicated over t, and their grads
    gqa.py        GroupedQueryAttention (GQA / MQA) with RoPE
    llama.py      LlamaBlock and Llama (Llama 2/3, Mistral, Qwen2): GQA, SwiGLU, RMSNorm, untied logits
    llama_config.py LlamaConfig and presets from the published config.json files
    llama_analyse.py analyse_llama(): a Llama training step, shape-only, as analyse() for a GPT
    models.py     resolve_model(): a preset or file as the exact Llama or a GPT, for tpsim model / compare
    comm_table.py the forward/backward communication table of any module
    timeline.py   per-device compute and communication timeline; predicted TP efficiency
"""

from tpsim.nn.attention import ParallelAttention
from tpsim.nn.block import TransformerBlock
from tpsim.nn.comm_table import comm_table, format_comm_table
from tpsim.nn.config import GPTConfig
from tpsim.nn.dropout import Dropout, RNGTracker, hidden_stream
from tpsim.nn.embedding import VocabParallelEmbedding, VocabParallelLogits, padded_vocab_size
from tpsim.nn.gpt import GPT, analyse
from tpsim.nn.gqa import GroupedQueryAttention
from tpsim.nn.linear import ColumnParallelLinear, RowParallelLinear
from tpsim.nn.llama import Llama, LlamaBlock
from tpsim.nn.llama_config import LLAMA_PRESETS, LlamaConfig
from tpsim.nn.loss import VocabParallelCrossEntropy
from tpsim.nn.mlp import ParallelMLP
from tpsim.nn.module import Module
from tpsim.nn.norm import LayerNorm
from tpsim.nn.pipeline_stages import PipelinedGPT
from tpsim.nn.rmsnorm import RMSNorm
from tpsim.nn.rope import RotaryEmbedding
from tpsim.nn.swiglu import SwiGLUMLP
from tpsim.nn.timeline import device_timeline, format_efficiency, tp_efficiency, utilisation

__all__ = [
    "GPT", "ColumnParallelLinear", "Dropout", "GPTConfig", "LayerNorm", "Module", "ParallelAttention",
    "ParallelMLP", "RNGTracker", "RowParallelLinear", "TransformerBlock", "VocabParallelCrossEntropy",
    "VocabParallelEmbedding", "VocabParallelLogits", "analyse", "comm_table", "device_timeline",
    "format_comm_table", "format_efficiency", "hidden_stream", "padded_vocab_size", "tp_efficiency",
    "utilisation",
]
__all__ += ["PipelinedGPT"]  # a GPT over pipeline stages
__all__ += [  # the Llama layers
    "LLAMA_PRESETS", "GroupedQueryAttention", "Llama", "LlamaBlock", "LlamaConfig", "RMSNorm",
    "RotaryEmbedding", "SwiGLUMLP",
]
