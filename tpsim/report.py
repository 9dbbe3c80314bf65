"""Plain-text tables of a trace: collectives (time, algbw, busbw), devices, steps and links."""

from __future__ import annotations

from collections.abc import Sequence


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def fmt_time(s: float) -> str:
    if s == 0:
        return "0"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_rate(bps: float) -> str:
    if bps == float("inf"):
        return "inf"
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} B/s"


def table(rows: Sequence[Sequence[object]], header: Sequence[str], title: str | None = None) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    right = [all(_numeric(r[i]) for r in cells[1:]) if rows else False for i in range(len(header))]
    lines = [title] if title else []
    for j, r in enumerate(cells):
        padded = (c.rjust(w) if a else c.ljust(w) for c, w, a in zip(r, widths, right, strict=True))
        lines.append("  ".join(padded).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "-." or s == "inf")


def summary_text(trace, max_rows: int = 16) -> str:
    """The trace as text: one table per view, long tables cut to `max_rows` with a note."""
    parts = []
    coll = [
        (
            c.index,
            c.collective,
            c.algorithm,
            c.label or "",
            f"{c.group_size}x{c.num_groups}",
            fmt_bytes(c.nbytes),
            c.num_steps,
            fmt_bytes(c.wire_bytes),
            fmt_time(c.time),
            fmt_rate(c.algbw),
            fmt_rate(c.busbw),
        )
        for c in trace.collectives
    ]
    parts.append(
        _cut(
            coll,
            (
                "#",
                "collective",
                "algorithm",
                "label",
                "p x groups",
                "size",
                "steps",
                "wire bytes",
                "time",
                "algbw",
                "busbw",
            ),
            "Collectives",
            max_rows,
        )
    )
    dev = [
        (d["device"], fmt_bytes(d["sent"]), fmt_bytes(d["received"]), fmt_bytes(m["peak"]))
        for d, m in zip(trace.per_device(), trace.mesh.memory(), strict=False)
    ]
    parts.append(_cut(dev, ("device", "sent", "received", "peak memory"), "Devices", max_rows))
    links = sorted(trace.per_link(), key=lambda r: -r["bytes"])
    parts.append(
        _cut(
            [(r["link"], fmt_bytes(r["bytes"]), fmt_time(r["busy"])) for r in links],
            ("link", "bytes", "busy"),
            "Busiest links",
            max_rows,
        )
    )
    if trace.compute:
        total = sum(op.end - op.start for op in trace.compute)
        parts.append(f"Compute: {len(trace.compute)} ops, {fmt_time(total)} summed over devices")
    end = max((c.end for c in trace.collectives), default=0.0)
    parts.append(f"Total: {fmt_bytes(trace.wire_bytes)} on links; simulated time {fmt_time(end)}")
    return "\n\n".join(parts)


def steps_text(trace, collective: int = -1) -> str:
    """One line per step of one collective: when it ran, how many transfers and bytes."""
    c = trace.collectives[collective]
    rows = [
        (
            s.index + 1,
            s.num_transfers,
            fmt_bytes(s.wire_bytes),
            fmt_time(s.start - c.start),
            fmt_time(s.end - s.start),
        )
        for s in trace.steps
        if s.collective == c.index
    ]
    return table(
        rows,
        ("step", "transfers", "bytes", "starts at", "lasts"),
        f"{c.collective} ({c.algorithm}) on {c.group_size} devices, step by step",
    )


def _cut(rows: list, header: tuple, title: str, max_rows: int) -> str:
    if len(rows) > max_rows:
        more = len(rows) - max_rows
        return table(rows[:max_rows], header, title) + f"\n... {more} more row{'s' if more > 1 else ''}"
    return table(rows, header, title)
