"""What an `iteration()` figure assumes, in words to print beside it (lessons 8 and 9 do).

    describe(r, cluster, ...)   one line: efficiency mode, overlap, recompute, kernels, batch, ZeRO-1,
                                the cluster and whether its link rates are nominal or achievable
    sources(device, cluster)    where the efficiency parameters and the cluster's figures come from

The iteration result names its mode, recompute, kernels and batch itself; the caller says what the
result does not carry (DP overlap, ZeRO-1, achievable rates), as it passed them to `iteration`.
"""

from __future__ import annotations

from tpsim.efficiency import efficiency_for


def rates(cluster) -> str:
    """The cluster's link rates, per direction: each GPU's link into its node, and the node's NICs."""
    return (
        f"{cluster.intra_bandwidth / 1e9:.4g} GB/s per GPU inside a node, {cluster.nics} NICs x "
        f"{cluster.nic_bandwidth / 1e9:.4g} GB/s per node between nodes"
    )


def describe(
    r: dict,
    cluster,
    *,
    achievable: bool = False,
    dp_overlap: bool = False,
    zero1: bool = False,
) -> str:
    """One line naming every assumption behind the iteration result `r` on `cluster`."""
    mode = r["mode"]
    eff = "compute at datasheet peak (roofline)" if mode == "peak" else f"compute: {mode} efficiency"
    batch = f"micro-batch {r['micro_batch']}, {r['microbatches']} per step, global batch {r['global_batch']}"
    return (
        f"{eff} ({r['device']}); TP comm not overlapped, DP overlap {'on' if dp_overlap else 'off'}; "
        f"recompute {r['recompute']}; kernels {r['kernels']}; {batch}; ZeRO-1 {'on' if zero1 else 'off'}; "
        f"{r['cluster']}, links {'achievable' if achievable else 'nominal (datasheet)'}: {rates(cluster)}"
    )


def sources(device: str, cluster) -> list[str]:
    """The realistic efficiency's source for `device` (a tpsim.hardware.DEVICES key) and the cluster's."""
    eff = efficiency_for(device, "realistic")
    assert eff is not None  # the realistic mode always has parameters (or raises)
    return [f"efficiency ({device}, {eff.date}): {eff.source}", f"cluster {cluster.name}: {cluster.source}"]
