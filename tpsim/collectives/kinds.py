"""The collectives by name: one enum, valued with the names DTensor, NCCL and torch.distributed use.

A `Collective` is a str, so `Collective.ALL_REDUCE == "all_reduce"`, it prints as all_reduce, keys
dicts and JSON as that string, and every call that takes the name as a string takes the member too.
Its repr is the string's, so records and tables print as they did with plain names.
"""

from __future__ import annotations

from enum import StrEnum


class Collective(StrEnum):
    ALL_REDUCE = "all_reduce"
    REDUCE = "reduce"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_GATHER = "all_gather"
    BROADCAST = "broadcast"
    SCATTER = "scatter"
    GATHER = "gather"
    ALL_TO_ALL = "all_to_all"

    def __repr__(self) -> str:
        return repr(self.value)
