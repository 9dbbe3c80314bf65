"""kernels.layer_passes / backward_passes against op lists written out from the code they model.

Each op is (key, tensor, reads, writes): `tensor` names the elements it streams (a tensor of size `x`
read once and written once is 2 x passes).  2019: NVIDIA/Megatron-LM a1d04b7 mpu/transformer.py and
mpu/layers.py; 2020: megatron/model/transformer.py after 51a2e6b.
"""

import pytest

from tpsim.plan.kernels import KERNELS, KernelsError, backward_passes, layer_passes

S, B, HID, A, FFN = 1024, 8, 1536, 16, 6144


def sizes(t: int, sp: bool) -> dict[str, float]:
    T = B * S
    return {"rep": T * HID / (t if sp else 1), "H": T * HID / t, "core": B * A * S * S / t, "F": T * FFN / t}


FORWARD_2019 = [  # (key, tensor, reads, writes), in the order mpu/transformer.py runs them
    ("layernorm x2", "rep", 2, 2),  # two LayerNorms: read x, write y
    ("qkv bias add", "H", 3, 3),  # F.linear's `output += bias` on [b, s, 3h/t]
    ("q, k scaling", "H", 2, 2),  # query / norm_factor, key^T / norm_factor
    ("q, k, v copies", "H", 3, 3),  # matmul's contiguous() on q, k^T, v
    ("mask", "core", 2, 2),  # scores * mask, then - 10000 (1 - mask)
    ("softmax", "core", 3, 1),  # pre-persistent kernel: max, sum of exp, write
    ("attention dropout", "core", 1, 1.5),  # writes a 1-byte mask: half a 2-byte pass
    ("context transpose", "H", 1, 1),
    ("bias-dropout-add x2", "rep", 2 * (1 + 1 + 2), 2 * (1 + 1.5 + 1)),  # bias add, dropout, residual
    ("bias-gelu", "F", 2, 2),  # fc1's bias add, then the jit-scripted GeLU
]
BACKWARD_2019 = [
    ("layernorm x2", "rep", 2 * (2 + 2 + 2), 2 * (1 + 1)),  # gamma/beta grads, dx, + the residual grad
    ("qkv bias add", "H", 3 + 3, 3),  # bias grad (read dy), torch.split's backward cat
    ("q, k scaling", "H", 2, 2),
    ("q, k, v copies", "H", 3, 3),  # view backward: the permuted q, k, v grads made contiguous
    ("mask", "core", 1, 1),  # dy * mask
    ("softmax", "core", 4, 1),  # sum(dy y), then dx = y (dy - sum): y and dy read twice
    ("attention dropout", "core", 1.5, 1),
    ("context transpose", "H", 1, 1),
    ("bias-dropout-add x2", "rep", 2 * (1.5 + 1), 2 * 1),  # dropout's dx; the bias grad reads dy
    ("bias-gelu", "F", 1 + 2, 1),  # bias grad; GeLU's backward reads dy and x
]


def total(ops, key: str, size: dict[str, float]) -> float:
    return sum((r + w) * size[tensor] for k, tensor, r, w in ops if k == key)


@pytest.mark.parametrize("t, sp", [(1, False), (4, False), (4, True)])
def test_unfused_passes_are_the_2019_op_lists(t, sp):
    size = sizes(t, sp)
    for fn, ops in ((layer_passes, FORWARD_2019), (backward_passes, BACKWARD_2019)):
        got = fn(S, B, HID, A, t, sp, "unfused", FFN)
        want = {k: total(ops, k, size) for k in got}
        assert got == pytest.approx(want), fn.__name__
        assert got.get("flash attention io", 0.0) == 0.0


def test_fused_drops_what_megatron_2020_fused_and_keeps_the_rest():
    f19, f20 = (layer_passes(S, B, HID, A, 1, False, k, FFN) for k in ("unfused", "fused"))
    b20 = backward_passes(S, B, HID, A, 1, False, "fused", FFN)
    gone = ("q, k scaling", "q, k, v copies", "mask")  # baddbmm's alpha, strided bmm, the fused mask
    assert all(f20[k] == 0 == b20[k] for k in gone) and all(f19[k] > 0 for k in gone)
    core = sizes(1, False)["core"]
    assert f20["softmax"] == 2 * core and b20["softmax"] == 3 * core  # fused scale-mask-softmax
    assert f20["bias-gelu"] == f19["bias-gelu"] / 2  # bias_gelu_impl: read y, write
    assert f20["qkv bias add"] == f19["qkv bias add"]  # QKV's F.linear is not skip_bias_add in 2020


def test_flash_keeps_scores_on_chip_and_every_set_is_refused_alike():
    fl, bl = layer_passes(S, B, HID, A, 2, False, "flash"), backward_passes(S, B, HID, A, 2, False, "flash")
    H = sizes(2, False)["H"]
    assert fl["softmax"] == fl["mask"] == bl["softmax"] == 0.0
    assert (fl["flash attention io"], bl["flash attention io"]) == (4 * H, 8 * H)
    for kernels in KERNELS:
        assert (
            layer_passes(S, B, HID, A, 1, False, kernels).keys()
            == backward_passes(S, B, HID, A, 1, False, kernels).keys()
        )
    with pytest.raises(KernelsError, match="valid: unfused, fused, flash"):
        backward_passes(8, 1, 8, 1, 1, False, "cudnn")
