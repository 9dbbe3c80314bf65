"""kernels.OPTIMIZER_BYTES / LOCAL_DDP_BYTES / CROSS_ENTROPY_BYTES against op lists written out from
Megatron-LM 2019 (NVIDIA/Megatron-LM a1d04b7; the cross-entropy also 2020's, 51a2e6b), and iteration.py
charging them by kernel set.

Each op is (what, bytes read, bytes written) per parameter or per logit element: fp16 is 2 B, fp32 4 B.
"""

import pytest

from tpsim.efficiency import V100, memory_time
from tpsim.nn.config import GPTConfig
from tpsim.plan.cluster import DGX2H_NCCL, dgx2h_v100
from tpsim.plan.iteration import iteration, logit_times
from tpsim.plan.kernels import CROSS_ENTROPY_BYTES, LOCAL_DDP_BYTES, OPTIMIZER_BYTES
from tpsim.plan.layout import Layout

OPTIMIZER_2019 = [  # pretrain_gpt2.py backward_step / train_step, fp16/fp16.py FP16_Optimizer
    ("zero_grad: fp32 master grads, fp16 model grads", 0, 4 + 2),
    ("overflow check: float(x.float().sum())", 2 + 4, 4),
    ("model_grads_to_master_grads: copy_", 2, 4),
    ("_downscale_master: mul_(1 / loss_scale)", 4, 4),
    ("clip_grad_norm: p.grad.data.norm(2)", 4, 0),
    ("FusedAdam: weight, grad, m, v in; weight, m, v out", 4 * 4, 3 * 4),
    ("_master_params_to_model_params: copy_", 4, 2),
]
LOCAL_DDP_2019 = [  # model/distributed.py allreduce_params(reduce_after=False)
    ("_flatten_dense_tensors", 2, 2),
    ("coalesced /= world_size", 2, 2),
    ("buf.copy_(synced)", 2, 2),
]
CROSS_ENTROPY_2019 = [  # pretrain_gpt2.py forward_step, mpu/cross_entropy.py
    ("output.float()", 2, 4),
    ("clone()", 4, 4),
    ("max", 4, 0),
    ("sub_", 4, 4),
    ("exp", 4, 4),
    ("sum", 4, 0),
    ("div_", 4, 4),
]
CROSS_ENTROPY_BACKWARD_2019 = [("grad_input.mul_", 4, 4), (".float()'s backward to fp16", 4, 2)]
CROSS_ENTROPY_2020 = [op for op in CROSS_ENTROPY_2019 if op[0] != "clone()"]  # 51a2e6b: in place


def nbytes(ops) -> int:
    return sum(r + w for _, r, w in ops)


def test_the_2019_constants_are_the_op_lists():
    assert OPTIMIZER_BYTES["unfused"] == nbytes(OPTIMIZER_2019)
    assert LOCAL_DDP_BYTES["unfused"] == nbytes(LOCAL_DDP_2019)
    assert CROSS_ENTROPY_BYTES["unfused"] == (nbytes(CROSS_ENTROPY_2019), nbytes(CROSS_ENTROPY_BACKWARD_2019))
    assert LOCAL_DDP_BYTES["fused"] == LOCAL_DDP_BYTES["flash"] == 0
    for k in ("fused", "flash"):
        assert CROSS_ENTROPY_BYTES[k] == (nbytes(CROSS_ENTROPY_2020), nbytes(CROSS_ENTROPY_BACKWARD_2019))


CFG = GPTConfig(51200, 1536, 4, 16, 1024, dtype="float16", name="small-1.2B-shape")


def _run(kernels: str, dp: int, dp_overlap: bool) -> dict:
    return iteration(
        CFG,
        Layout(1, dp),
        cluster=DGX2H_NCCL,
        device=dgx2h_v100(),
        global_batch=8 * dp,
        micro_batch=8,
        efficiency=V100,
        recompute="full",
        kernels=kernels,
        dp_overlap=dp_overlap,
    )


@pytest.mark.parametrize(
    "kernels, dp, dp_overlap, ddp",
    [
        ("unfused", 1, False, True),  # the local DDP wrapper runs at one GPU too
        ("unfused", 4, False, True),
        ("unfused", 4, True, False),  # torch's DDP: no local flatten / copy back
        ("fused", 1, False, False),
        ("flash", 4, False, False),
    ],
)
def test_iteration_charges_the_kernel_sets_optimizer_and_ddp_copies(kernels, dp, dp_overlap, ddp):
    r, spec = _run(kernels, dp, dp_overlap), dgx2h_v100()
    p = r["memory"]["parameters"]
    want = memory_time(spec, V100, OPTIMIZER_BYTES[kernels] * p)
    want += memory_time(spec, V100, LOCAL_DDP_BYTES[kernels] * p) if ddp else 0.0
    assert r["time"]["optimizer"] == pytest.approx(want, rel=1e-12)


def test_logits_charge_the_kernel_sets_cross_entropy():
    spec, T, v = dgx2h_v100(), 8 * CFG.seq_len, CFG.vocab_size
    (f19, b19), (f20, b20) = (logit_times(CFG, 1, 8, spec, V100, k) for k in ("unfused", "fused"))
    (cf19, cb19), (cf20, cb20) = CROSS_ENTROPY_BYTES["unfused"], CROSS_ENTROPY_BYTES["fused"]
    # the same logit GEMM both times: the difference is the cross-entropy's bytes alone
    assert f19 - f20 == pytest.approx(
        memory_time(spec, V100, cf19 * T * v) - memory_time(spec, V100, cf20 * T * v), rel=1e-9
    )
    assert b19 - b20 == pytest.approx(
        memory_time(spec, V100, cb19 * T * v) - memory_time(spec, V100, cb20 * T * v), rel=1e-9
    )
