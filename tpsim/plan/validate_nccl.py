"""The collective model (cluster.py, nccl_model.py) beside published NCCL measurements.

Azure's AI-benchmarking-guide runs nccl-tests' all_reduce_perf (in place, 1 KiB to 8 GiB, doubling)
on one 8-GPU VM of each series and publishes the bus bandwidth at every size.  tpsim predicts each
from the realistic cluster of the same GPU (CLUSTERS: achievable link rates, NCCL's Simple-protocol
latencies, `auto` choosing the algorithm), as

    busbw = S / t(S) x 2 (p - 1) / p        (nccl-tests' PERFORMANCE.md definition for all-reduce)

What to expect: the A100's 8 GiB point is circular by construction (the A100's achievable NVLink rate
*is* that measurement, nodes.py), so it checks only the arithmetic; the H100's and H200's are not (their
link rates take the A100's fraction; NVLS's in-switch reduction is NCCL's own 5/6 of busbw).  At small
and middle sizes NCCL runs its LL and LL128 protocols and pipelines each step in chunks, neither of
which this model has (one Simple-protocol latency per step, then bytes over bandwidth), so the summary
reports the bandwidth-bound sizes (64 MiB and up) apart from the smaller ones.

OPTIONS are scored on the same curves, never fitted to them: `chunks` (ring hop latencies once per
512 KiB Simple slot) only adds latency where a step takes several slots, i.e. at large sizes, so it
leaves the too-fast middle sizes as they are; `protocols` (NCCL 2.18.5's own LL / LL128 figures) lowers
the predicted time, so it widens the gap wherever it is picked.
"""

from __future__ import annotations

import statistics

from tpsim.collectives.costs import bus_bandwidth_factor
from tpsim.nodes import BY_DEVICE
from tpsim.plan.cluster import CLUSTERS, Cluster, realistic

GPUS = 8
SIZES = [1 << k for k in range(10, 34)]  # 1 KiB .. 8 GiB, all_reduce_perf -b 1K -e 8G -f 2
LABELS = [
    "1K",
    "2K",
    "4K",
    "8K",
    "16K",
    "32K",
    "65K",
    "132K",
    "256K",
    "524K",
    "1M",
    "2M",
    "4M",
    "8M",
    "16M",
    "33M",
    "67M",
    "134M",
    "268M",
    "536M",
    "1G",
    "2G",
    "4G",
    "8G",
]  # as the source prints them
LARGE = 64 << 20  # from here on a size is bandwidth-bound: the "large" summary
AZURE = (
    "Azure/AI-benchmarking-guide, Azure_Results/{}, 'NCCL Bandwidth' (all_reduce_perf, in place, busbw GB/s)"
)
PUBLISHED = {  # gpu: (Azure VM series, results file, NCCL version, where read, busbw GB/s at SIZES)
    "a100": (
        "ND A100 v4",
        "ND_A100_v4_results.md",
        "2.18.5",
        "Azure/AI-benchmarking-guide@3bb66ca",
        [
            0.04,
            0.08,
            0.17,
            0.33,
            0.67,
            1.37,
            2.70,
            5.15,
            10.11,
            19.24,
            36.22,
            53.54,
            71.43,
            89.99,
            109.22,
            132.77,
            166.63,
            174.18,
            213.87,
            221.58,
            228.10,
            230.22,
            230.48,
            231.58,
        ],
    ),
    "h100": (
        "ND H100 v5",
        "ND_H100_v5_results.md",
        "2.18.5",
        "its fork samuel-bohman/AI-benchmarking-guide@26d18e9 (the stored copy)",
        [
            0.07,
            0.14,
            0.27,
            0.53,
            0.95,
            1.71,
            2.72,
            5.40,
            10.86,
            21.35,
            43.70,
            81.93,
            128.73,
            172.13,
            234.45,
            295.53,
            361.78,
            400.61,
            423.38,
            438.46,
            466.35,
            472.36,
            475.54,
            478.87,
        ],
    ),
    "h200": (
        "ND H200 v5",
        "ND_H200_v5_results.md",
        "2.20.5",
        "Azure/AI-benchmarking-guide@7f20e5f",
        [
            0.06,
            0.12,
            0.23,
            0.47,
            0.93,
            1.84,
            3.72,
            7.39,
            14.75,
            29.38,
            52.96,
            88.78,
            138.44,
            181.94,
            240.41,
            300.91,
            368.11,
            412.45,
            432.24,
            442.72,
            467.58,
            472.57,
            477.41,
            479.98,
        ],
    ),
}


def predict(gpu: str, nbytes: float, cluster: Cluster | None = None) -> dict:
    """Bus bandwidth (GB/s) of one all-reduce of `nbytes` over one node's 8 GPUs, and the algorithm
    (on CLUSTERS[gpu] unless another cluster is given)."""
    cluster = CLUSTERS[gpu] if cluster is None else cluster
    seconds = cluster.all_reduce(GPUS, 1, nbytes)
    busbw = nbytes / seconds * bus_bandwidth_factor("all_reduce", GPUS) / 1e9
    return dict(algorithm=cluster.choose(GPUS, 1, nbytes), seconds=seconds, busbw=busbw)


def _summary(errors: list[float]) -> dict:
    return dict(median=statistics.median(map(abs, errors)), worst=max(map(abs, errors)), sizes=len(errors))


OPTIONS = ("chunks", "protocols")  # realistic(node, ...=True): time-model options, not the default


def option(gpu: str, cluster: Cluster) -> dict:
    """One time-model option's errors against the same curve: its median / worst summaries."""
    busbw = PUBLISHED[gpu][4]
    errors = [predict(gpu, s, cluster)["busbw"] / b - 1 for s, b in zip(SIZES, busbw, strict=True)]
    return dict(
        collectives=cluster.describe(),
        large=_summary([e for s, e in zip(SIZES, errors, strict=True) if s >= LARGE]),
        small=_summary([e for s, e in zip(SIZES, errors, strict=True) if s < LARGE]),
        at_8g=errors[-1],
    )


def report() -> dict:
    curves = {}
    for gpu, (series, path, nccl, read, busbw) in PUBLISHED.items():
        rows = []
        for size, label, published in zip(SIZES, LABELS, busbw, strict=True):
            p = predict(gpu, size)
            rows.append(
                dict(
                    size=size,
                    label=label,
                    published_gbs=published,
                    predicted_gbs=p["busbw"],
                    algorithm=p["algorithm"],
                    error=p["busbw"] / published - 1,
                )
            )
        curves[gpu] = dict(
            series=series,
            nccl=nccl,
            source=AZURE.format(path) + f"; read from {read}",
            collectives=CLUSTERS[gpu].describe(),
            circular_at_8g=gpu == "a100",
            rows=rows,
            large=_summary([r["error"] for r in rows if r["size"] >= LARGE]),
            small=_summary([r["error"] for r in rows if r["size"] < LARGE]),
            options={name: option(gpu, realistic(BY_DEVICE[gpu], **{name: True})) for name in OPTIONS},
        )
    return dict(gpus=GPUS, large_from_bytes=LARGE, curves=curves)
