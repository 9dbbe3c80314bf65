"""Read the output of NVIDIA's nccl-tests (all_reduce_perf, all_gather_perf, ...) into a table.

A data line of nccl-tests holds, after size, count, type, redop and root, the out-of-place time (us),
algbw and busbw, #wrong, then the same four in-place:

    #       size         count      type   redop    root     time   algbw   busbw #wrong     time ...
       1048576        262144     float     sum      -1    45.10   23.25   40.69      0    44.87 ...

Older nccl-tests (before the root column) print no root, and the collectives without a reduction
print "none" as redop; `#wrong` may be "N/A" (run with -c 0).  Those lines are read alike: after the
type, the redop word and the root (when present) are skipped, then eight columns follow.

Lines tagged by `mpirun --tag-output` ("[1,0]<stdout>:") are read without the tag.

`size` is the whole buffer in bytes (the output for all_gather, the input for reduce_scatter), which
is the S of tpsim.collectives.costs.  The collective comes from the "Collective test starting" line
or the binary's name; the ranks from the "#  Rank  i ..." lines (one per GPU).
"""

from __future__ import annotations

import re
from pathlib import Path

from tpsim.errors import NcclTestsError

_TAG = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:", flags=re.MULTILINE)  # mpirun --tag-output
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all")


def parse(text: str, where: str = "nccl-tests output") -> dict:
    """{collective, ranks, rows: [{size, count, type, time_s, algbw, busbw, in_place_time_s}]}."""
    text = _TAG.sub("", text)
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 11 or line.lstrip().startswith("#") or not parts[0].isdigit():
            continue
        rest = parts[3:]
        if rest and not _number(rest[0]):  # the redop: sum, prod, min, max, avg, none, ...
            rest = rest[1:]
        if len(rest) == 9:  # the root (-1 where there is none)
            rest = rest[1:]
        if len(rest) != 8:
            continue
        try:
            rows.append(
                dict(
                    size=int(parts[0]),
                    count=int(parts[1]),
                    type=parts[2],
                    time_s=float(rest[0]) * 1e-6,
                    algbw=float(rest[1]) * 1e9,
                    busbw=float(rest[2]) * 1e9,
                    in_place_time_s=float(rest[4]) * 1e-6,
                )
            )
        except ValueError:
            continue
    if not rows:
        raise NcclTestsError(f"{where}: no nccl-tests data lines (size count type redop root time ...)")
    named = re.search(r"Collective test starting:\s*(\w+?)_perf", text) or re.search(r"(\w+?)_perf", text)
    collective = named.group(1) if named and named.group(1) in COLLECTIVES else None
    ranks = len(re.findall(r"^#\s+Rank\s+\d+", text, flags=re.MULTILINE)) or None
    return {"collective": collective, "ranks": ranks, "rows": rows}


def _number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read(path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise NcclTestsError(f"cannot read {path}: {e}") from None
    return parse(text, str(path))
