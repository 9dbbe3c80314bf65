"""python -m tpsim.bugs [--world-size 2]: the catalogue, each mutation run through the detector."""

from __future__ import annotations

import argparse
import sys

from tpsim.bugs.catalogue import CATALOGUE, SKIPPED


def table(world_size: int) -> str:
    lines = [f"{'mutation':<36} {'caught':<6}  flagged (worst relative error at t = {world_size})"]
    for m in CATALOGUE:
        r = m.detect(world_size=world_size)
        caught = set(m.caught_by) <= set(r.flagged)
        lines.append(f"{m.name:<36} {caught!s:<6}  " + ", ".join(f"{k} {r.errors[k]:.3g}" for k in r.flagged))
        lines.append(f"{'':<36} source: {m.source}")
        lines.append(f"{'':<36} symptom: {m.symptom}")
        lines.append(f"{'':<36} check: {m.check}")
    lines += [f"{name:<36} skipped: {why}" for name, why in SKIPPED.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tpsim.bugs", description=__doc__.splitlines()[0])
    p.add_argument("--world-size", type=int, default=2)
    a = p.parse_args(argv)
    print(table(a.world_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
