"""GQA on one rank without the replicated KV heads' grad all-reduce: mirrors tpsim/bugs/gqa.py.

The correct QKV projection all-reduces its KV rows' grads over the r ranks sharing the head when
it has a `kv_comm`; this one is built without it, so each copy keeps its own rank's partial.
"""

from __future__ import annotations

from reference.gqa import GroupedQueryAttention


class KVHeadGradsUnreduced(GroupedQueryAttention):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.query_key_value.kv_comm = None  # the bug: no group to reduce the copies' grads over
