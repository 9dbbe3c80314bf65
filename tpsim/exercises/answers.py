"""Reading a learner's answer: numbers with units ("1.5 KiB", "3 us"), choice names, sentences.

    read_number("1.5 KiB", "bytes", "2.2", expects)   # 1536.0; AnswerError naming the exercise if unreadable
    choice_key("Halving-Doubling") == choice_key("halving_doubling")   # case, spaces, "-" and "_" ignored

Byte units are SI (kB = 1e3) and IEC (KiB = 1024); time units run from s to ns (us, µs and μs alike).
"""

from __future__ import annotations

import math
import numbers
import re

from tpsim.errors import AnswerError

BYTE_UNITS = {
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def read_number(answer, unit: str | None, key: str, expects: str) -> float:
    """A number, or a string with a unit suffix (`unit` "bytes" or "seconds"), as a finite float."""
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real | str):
        raise AnswerError(f"exercise {key}: {answer!r} is not a number; {expects}")
    if not isinstance(answer, str):
        value = float(answer)
    else:
        m = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-zµμ]*)\s*", answer)
        scale = {"bytes": BYTE_UNITS, "seconds": TIME_UNITS}.get(unit or "", {})
        suffix = m.group(2).lower() if m else ""
        if m is None or (suffix and suffix not in scale):
            raise AnswerError(f"exercise {key}: cannot read {answer!r}; {expects}")
        value = float(m.group(1)) * scale.get(suffix, 1)
    if not math.isfinite(value):
        raise AnswerError(f"exercise {key}: {answer!r} is not a finite number; {expects}")
    return value


def sentence(text: str) -> str:
    """text ending in a full stop (or ? or !)."""
    return text if text.endswith((".", "?", "!")) else text + "."


def choice_key(name: str) -> str:
    """The name two spellings of one choice share: lower case, without spaces, "-" or "_"."""
    return re.sub(r"[\s_\-]", "", name.lower())
