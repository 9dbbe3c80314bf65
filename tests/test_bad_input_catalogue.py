"""Issue 18's catalogue: bad input never runs away, never passes silently, never ends in a deep traceback.

Each row is one bad input: the call, the error class it must raise, a value its message must name,
and the mesh (if any) whose memory, ledger and trace must be as they were before the call.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tpsim
from tpsim import Mesh, Replicate, Shard, distribute, from_local
from tpsim.errors import (
    AlgorithmError,
    ArgumentError,
    CallOrderError,
    ConfigError,
    DTypeError,
    LaunchError,
    LayoutError,
    MeshError,
    PipelineError,
    PlacementError,
    ResourceLimitError,
    ShapeError,
    TopologyError,
    TpsimError,
    WorldSizeError,
)
from tpsim.nn import ColumnParallelLinear, GPTConfig
from tpsim.nodes import NODES
from tpsim.plan.cluster import from_node, realistic


def state(mesh: Mesh | None) -> tuple:
    """What a rejected call must leave alone: memory per device, the ledger's lengths, the clocks."""
    if mesh is None:
        return ()
    t = mesh.trace
    memory = [(d.used, d.peak, dict(d.in_use)) for d in mesh.devices]
    return memory, len(t.collectives), len(t.steps), len(t.compute), t.wire_bytes, list(mesh.clock)


def layer_and_mesh(dtype="float32"):
    mesh = Mesh(4)
    return mesh, ColumnParallelLinear(mesh, 8, 8, init="exact", dtype=dtype)


def cli(*argv):
    """The `tpsim` subcommand's own run(args): its TpsimError is what main() turns into exit 2."""
    from tpsim.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return None, lambda: args.func(args)


def reference_check(world_size, **kw):
    from reference.check import check

    return None, lambda: check(world_size, [], **kw)


def other_mesh_input():
    mesh, layer = layer_and_mesh()
    x = distribute(np.ones((2, 8), np.float32), Mesh(4), Replicate())
    return mesh, lambda: layer(x)


def smaller_mesh_input():
    mesh, layer = layer_and_mesh()
    x = distribute(np.ones((2, 8), np.float32), Mesh(2), Replicate())
    return mesh, lambda: layer(x)


def float64_input():
    mesh, layer = layer_and_mesh()
    x = distribute(np.ones((2, 8), np.float64), mesh, Replicate())
    return mesh, lambda: layer(x)


def backward_first():
    mesh, layer = layer_and_mesh()
    dy = distribute(np.ones((2, 8), np.float32), mesh, Shard(-1))
    return mesh, lambda: layer.backprop(dy)


def zero_features():
    mesh = Mesh(4)
    return mesh, lambda: ColumnParallelLinear(mesh, 0, 8)


def unequal_replicas():
    mesh = Mesh(2)
    return mesh, lambda: from_local([np.zeros(3), np.array([0.0, 5.0, 0.0])], mesh, Replicate())


def mixed_dtypes():
    mesh = Mesh(2)
    return mesh, lambda: from_local([np.zeros(3, np.float32), np.zeros(3, np.float64)], mesh, Shard(0))


def one_stage_pipeline():
    from tpsim.nn.pipeline_stages import PipelinedGPT

    mesh = Mesh((1, 2), names=("pp", "tp"))
    return mesh, lambda: PipelinedGPT(mesh, GPTConfig(11, 8, 2, 2, 5, dtype="float64"))


def microbatches_that_do_not_split_the_batch():
    from tpsim.nn.pipeline_stages import PipelinedGPT

    mesh = Mesh((2, 1), names=("pp", "tp"))
    model = PipelinedGPT(mesh, GPTConfig(11, 8, 2, 2, 5, dtype="float64"), microbatches=3, init="exact")
    ids = np.zeros((5, 4), np.int64)
    return mesh, lambda: model.step(ids, ids)
def chunks_that_do_not_divide_the_layers():
    from tpsim.plan.cluster import CLUSTERS
    from tpsim.plan.iteration import iteration
    from tpsim.plan.layout import Layout

    cfg = GPTConfig(1024, 256, 8, 8, 128)  # 4 layers per stage, 3 chunks
    kw = dict(global_batch=4, micro_batch=1, schedule="interleaved", chunks=3, streams=True)
    return None, lambda: iteration(cfg, Layout(1, 1, 2), cluster=CLUSTERS["h100"], **kw)
def llama_kv_not_dividing():
    from tpsim.nn.models import llama_from_dict

    d = dict(vocab_size=100, hidden=512, num_layers=2, num_heads=64, num_kv_heads=6, ffn_hidden=64, seq_len=8)
    return None, lambda: llama_from_dict(d)


def closed_form_gqa_at_a_tp_that_splits_no_kv_head():
    from tpsim.plan.kernels import layer_gemms

    # 12 heads of 64 in 4 KV heads: t = 3 neither divides 4 nor is a multiple of it
    return None, lambda: layer_gemms(16, 1, 768, 12, 3, kv_heads=4, gated=True)


def decode_unknown_mode():
    from tpsim import presets
    from tpsim.hardware import device_spec
    from tpsim.nn.llama_config import LLAMA_PRESETS
    from tpsim.serve.plan import decode_latency

    cfg, node = LLAMA_PRESETS["llama3-8b"], presets.nvlink_node(2, "h100")
    return None, lambda: decode_latency(cfg, 2, 1, 8, device_spec("h100"), node, mode="fast")


def row(name, make, error, names):
    return pytest.param(make, error, names, id=name)


CATALOGUE = [
    # runaway resources
    row("collective on 10^6 devices", lambda: cli("collective", "all-reduce", "--devices", "1000000"),
        ResourceLimitError, "--devices 1000000"),
    row("reference on 99 ranks", lambda: reference_check(99), LaunchError, "world_size 99"),
    # crashes instead of errors
    row("world size 0", lambda: reference_check(0), WorldSizeError, "world size = 0"),
    row("world size -1", lambda: reference_check(-1), WorldSizeError, "world size = -1"),
    row("timeout -1", lambda: reference_check(2, timeout=-1), LaunchError, "timeout = -1"),
    row("unknown algorithm", lambda: reference_check(2, comm="schedule", algorithm="rnig"),
        AlgorithmError, "'rnig'"),
    # accepted nonsense
    row("input from another mesh of the same shape", other_mesh_input, MeshError, "another Mesh"),
    row("float64 into a float32 layer", float64_input, DTypeError, "float64"),
    row("num_layers -1", lambda: (None, lambda: GPTConfig(100, 64, -1, 4, 32)), ConfigError,
        "num_layers = -1"),
    row("negative memory", lambda: (None, lambda: Mesh(4, memory=-1)), MeshError, "memory = -1"),
    row("unknown efficiency mode", lambda: (None, lambda: Mesh(2, device="h100", efficiency="fast")),
        MeshError, "efficiency = 'fast'"),
    row("realistic mode without a device", lambda: (None, lambda: Mesh(2, efficiency="realistic")),
        MeshError, "needs a device"),
    row("negative meta dim", lambda: (None, lambda: tpsim.meta((-3,))), ShapeError, "(-3,)"),
    row("in_features 0", zero_features, ArgumentError, "in_features = 0"),
    row("replicas that differ", unequal_replicas, PlacementError, "device 1 differs from device 0"),
    row("a pipeline of one stage", one_stage_pipeline, PipelineError, "pp >= 2"),
    row("3 microbatches of a batch of 4", microbatches_that_do_not_split_the_batch, ShapeError,
        "microbatches = 3"),
    # unclear errors
    row("Mesh(2.5)", lambda: (None, lambda: Mesh(2.5)), WorldSizeError, "2.5"),
    row("2-device input into a 4-device layer", smaller_mesh_input, WorldSizeError, "2 devices"),
    row("backward before forward", backward_first, CallOrderError, "backprop before forward"),
    row("from_local with two dtypes", mixed_dtypes, DTypeError, "float64"),
    row("cluster algorithm 'rnig'", lambda: (None, lambda: from_node(NODES["dgx-h100"], algorithm="rnig")),
        AlgorithmError, "'rnig'"),
    row("NVLS on a node without in-switch reduction",
        lambda: (None, lambda: from_node(NODES["dgx-a100"], algorithm="nvls")), TopologyError, "'nvls'"),
    row("NCCL slot chunks on a PCIe node", lambda: (None, lambda: realistic(NODES["pcie-l40s"], chunks=True)),
        TopologyError, "chunks on pcie-l40s"),
    row("3 chunks of 4 layers on the stream timeline", chunks_that_do_not_divide_the_layers, PipelineError,
        "4 layers per stage do not split into 3 chunks"),
    row("tpsim model llama3-70b --tp 3 (the exact Llama's 64 heads)",
        lambda: cli("model", "llama3-70b", "--tp", "3"), LayoutError,
        "--tp 3 does not divide llama3-70b's num_heads = 64"),
    row("tpsim serve-plan --realistic on a device without efficiency parameters",
        lambda: cli("serve-plan", "llama3-8b", "--gpus", "2", "--device", "l40s", "--realistic"),
        TopologyError, "no efficiency parameters for device 'l40s'"),
    row("serve decode_latency in an unknown mode", decode_unknown_mode, TopologyError,
        "unknown efficiency mode 'fast'; valid: realistic, peak"),
    row("Llama config with 64 heads in 6 KV heads", llama_kv_not_dividing, ConfigError,
        "num_heads = 64 is not a multiple of num_kv_heads = 6"),
    row("closed-form GQA layer at TP 3 of 4 KV heads", closed_form_gqa_at_a_tp_that_splits_no_kv_head,
        ShapeError, "TP degree 3"),
]


@pytest.mark.parametrize(("make", "error", "names"), CATALOGUE)
def test_bad_input_is_refused_clearly_and_changes_nothing(make, error, names):
    mesh, call = make()
    before = state(mesh)
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, TpsimError)
    assert names in str(caught.value)
    assert state(mesh) == before
    assert not multiprocessing.active_children()  # nothing was spawned


def test_the_estimate_is_in_the_message_and_force_is_named():
    _, call = cli("collective", "all-reduce", "--devices", "1000000")
    with pytest.raises(ResourceLimitError) as caught:
        call()
    message = str(caught.value)
    assert "would take about" in message and "--force" in message and "closed form" in message


def test_what_looked_wrong_but_is_valid_is_accepted():
    assert Mesh(np.int64(4)).shape == (4,)
    assert Mesh((np.int32(2), 2)).shape == (2, 2)
    x = distribute([[1.0, 2.0], [3.0, 4.0]], Mesh(2), Shard(0))  # a Python list, as np.asarray takes it
    assert_array_equal(x.full(), [[1.0, 2.0], [3.0, 4.0]])
    trusted = from_local([np.zeros(3), np.ones(3)], Mesh(2), Replicate(), run_check=False)
    assert_array_equal(trusted.full(), np.zeros(3))  # trusted: device 0's replica, as documented


def test_a_shape_only_run_on_many_devices_is_not_refused():
    mesh = Mesh(4096)
    out = tpsim.all_reduce([tpsim.meta((4096,))] * 4096, mesh, algorithm="tree")
    assert len(out) == 4096 and mesh.trace.collectives[-1].num_steps > 0


def test_the_cli_turns_the_refusal_into_exit_2(capsys):
    from tpsim.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["collective", "all-reduce", "--devices", "1000000"])
    assert exit_.value.code == 2
    assert "--devices 1000000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--world-size", "0"], "invalid value '0'; valid: an integer > 0"),
        (["--world-size", "-1"], "invalid value '-1'"),
        (["--world-size", "2", "--timeout", "-1"], "invalid value '-1'; valid: a number > 0"),
    ],
)
def test_reference_check_rejects_its_arguments_before_spawning(capsys, argv, says):
    from reference.check import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not multiprocessing.active_children()


def test_reference_check_refuses_99_ranks_unless_asked(capsys):
    from reference.check import main

    assert main(["--world-size", "99", "--layers", "mlp", "--data", "exact"]) == 2
    err = capsys.readouterr().err
    assert "world_size 99" in err and "--oversubscribe" in err
    assert not multiprocessing.active_children()
