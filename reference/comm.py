"""Comm: one rank's handle on a process group; every collective counts its bytes and is recorded.

    comm = Comm()                                  # native: the backend's own dist.* collectives
    comm = Comm(mode="schedule", algorithm="ring") # tpsim's Schedule over isend/irecv: tpsim's bits
    y = comm.all_reduce(x)                         # a NEW tensor; x is never modified
    comm.record[-1]                                # CallRecord(seq=0, op="all_reduce", ...)

Every op cuts along a dim by the torch.chunk rule, exactly like tpsim's placements and DTensor:
the dim is moved to the front, the collective runs on dim 0 as tpsim's does, and it is moved back
(reference/comm_layout.py).
Schedule mode runs the very Schedule object tpsim's engine runs, packed by tpsim's chunk table, so
results are bitwise equal to tpsim on any floats and the bytes equal tpsim's trace. Native mode counts
bytes with the same counter on the schedule of the collective's default algorithm (record: "model");
it cannot see inside gloo or NCCL.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from reference import comm_layout, native, preflight, schedule_exec, scope
from reference.backend import Backend
from reference.record import CallRecord, dtype_name
from reference.staging import is_staged
from tpsim import validate
from tpsim.collectives import layout
from tpsim.collectives.algorithms import ALGORITHMS, build, check_algorithm
from tpsim.errors import AlgorithmError, DTypeError, ShapeError, WorldSizeError
from tpsim.placement import REDUCE_OPS

MODES = ("native", "schedule")
UNEVEN = ("all_gather", "gather", "all_to_all")  # pieces may differ along a dim: shapes are exchanged
FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Comm:
    """One rank's handle on a process group: collectives that count bytes and record every call."""

    def __init__(
        self,
        group=None,
        *,
        mode: str = "native",
        algorithm: str | dict | None = None,
        preflight: bool = False,
        backend: Backend | None = None,
        padded: bool = True,
    ):
        if mode not in MODES:
            raise AlgorithmError(f"Comm mode {mode!r} is unknown; valid: {', '.join(MODES)}")
        if not isinstance(padded, bool) or (mode == "native" and not padded):
            raise AlgorithmError(
                f"Comm padded={padded!r} in {mode} mode; valid: True, or False with mode='schedule' "
                "(gloo and NCCL always pad uneven pieces; only tpsim's schedules can send them unpadded)"
            )
        self.padded = padded  # uneven all_gather / reduce_scatter pieces padded to the longest, as tpsim
        self.algorithms = algorithms_by_collective(algorithm)
        self.group = group if group is not None else dist.group.WORLD
        self.rank, self.size = dist.get_rank(self.group), dist.get_world_size(self.group)
        self.ranks = dist.get_process_group_ranks(self.group)
        self.mode, self.preflight = mode, preflight
        name = dist.get_backend(self.group)
        self.backend = backend or Backend(name, "cuda" if name == "nccl" else "cpu", False)
        cuda = self.backend.device_type == "cuda"
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self.bytes_sent = self.bytes_received = 0
        self.record: list[CallRecord] = []
        self.calls = 0  # collectives issued (a call rejected by preflight counts; one rejected locally not)

    def backend_for(self, device: torch.device) -> Backend:
        """The backend as this call sees it: gloo with a CUDA tensor is staged, whatever was said."""
        if self.backend.name == "gloo" and device.type == "cuda" and not self.backend.staged:
            return Backend("gloo", "cuda", True)
        return self.backend

    def all_reduce(self, x, op: str = "sum"):
        """Every rank gets the reduction (sum avg max min prod) of every rank's x (same shapes)."""
        return self._collective("all_reduce", x, op=op)

    def all_gather(self, x, dim: int = 0, sizes: list[int] | None = None):
        """Every rank's x joined along dim; pieces may differ along dim (`sizes`, or discovered)."""
        return self._collective("all_gather", x, dim=dim, sizes=sizes)

    def reduce_scatter(self, x, dim: int = 0, op: str = "sum"):
        """x is the full-size partial; returns this rank's torch.chunk piece along dim of the reduction."""
        return self._collective("reduce_scatter", x, dim=dim, op=op)

    def all_to_all(self, x, split_dim: int, concat_dim: int, sizes: list[int] | None = None):
        """S(concat_dim) -> S(split_dim), as DTensor: cut x along split_dim, piece j to rank j, join the
        pieces received along concat_dim. Uneven S(concat_dim) shards (`sizes`: every rank's length
        along concat_dim, or discovered) are padded to the longest and trimmed, as tpsim and DTensor do."""
        return self._collective("all_to_all", x, dim=split_dim, other_dim=concat_dim, sizes=sizes)

    def broadcast(self, x, src: int = 0):
        """Every rank gets src's x. Other ranks pass a tensor of the same shape, or None."""
        return self._collective("broadcast", x, root=src)

    def reduce(self, x, dst: int = 0, op: str = "sum"):
        """dst gets the reduction of every rank's x; the other ranks get None (as in tpsim)."""
        return self._collective("reduce", x, root=dst, op=op)

    def scatter(self, x, src: int = 0, dim: int = 0):
        """Rank j gets the torch.chunk piece j along dim of src's x; other ranks pass None or a tensor."""
        return self._collective("scatter", x, root=src, dim=dim)

    def gather(self, x, dst: int = 0, dim: int = 0, sizes: list[int] | None = None):
        """dst gets every rank's x joined along dim (pieces may differ along dim); the others get None."""
        return self._collective("gather", x, root=dst, dim=dim, sizes=sizes)

    def _collective(self, c: str, x, *, op=None, root=None, dim=None, other_dim=None, sizes=None):
        seq, start = self.calls, time.time()
        label, direction = scope.current()
        reducing = c in ("all_reduce", "reduce", "reduce_scatter")
        op = op if reducing else None
        ndim = self._check(c, x, op, root, dim, other_dim, sizes, seq)
        self.calls += 1  # issued to the group: every rank counts it, even if preflight then rejects it
        dim = None if dim is None else dim % ndim
        other_dim = None if other_dim is None else other_dim % ndim
        desc = preflight.Descriptor(
            seq,
            c,
            op,
            root,
            dim,
            other_dim,
            None if x is None else x.dtype,
            None if x is None else tuple(x.shape),
        )
        descs = None
        # the same decision on every rank, or the exchange deadlocks: `sizes` goes to every rank or none
        if self.preflight or c in ("broadcast", "scatter") or (sizes is None and c in UNEVEN):
            descs = preflight.exchange(desc, self.group, self._wire_device(x))  # control traffic
            preflight.check(descs, self.ranks)
        if x is None:  # a non-root of broadcast or scatter: the root's shape and dtype
            shape, dtype = descs[root].shape, descs[root].dtype
        else:
            shape, dtype = tuple(x.shape), x.dtype
        lengths = sizes
        if lengths is None and c in UNEVEN:
            lengths = [d.shape[other_dim if c == "all_to_all" else dim] for d in descs]
        front, rows, row_size, rebuild = comm_layout.to_rows(
            c, x, shape, dim, other_dim, lengths, self.size, self.rank
        )
        if c in ("broadcast", "scatter") and self.rank != root:
            front = None  # only the root's data is read, as in tpsim
        flat = None if front is None else front.reshape(-1)
        device = x.device if x is not None else self.device
        backend = self.backend_for(device)
        y, sent, received, algorithm, note, sends = self._move(
            c, flat, rows, row_size, op, root, dtype, device, backend
        )
        if y is not None and op == "avg":
            y = y / torch.tensor(self.size, dtype=dtype, device=y.device)  # once, at the end, as tpsim
        itemsize = torch.empty(0, dtype=dtype).element_size()
        per_rank = [r * row_size * itemsize for r in rows]
        nbytes = sum(per_rank) if c in ("all_gather", "gather") else per_rank[root or 0]
        self.bytes_sent += sent
        self.bytes_received += received
        self.record.append(
            CallRecord(
                seq,
                c,
                shape,
                dtype_name(dtype),
                tuple(self.ranks),
                self.mode,
                algorithm,
                sent,
                received,
                nbytes,
                op,
                root,
                self.ranks[self.rank],
                "exact" if self.mode == "schedule" else "model",
                is_staged(backend, "send" if self.mode == "schedule" else c),
                note,
                start,
                time.time(),
                direction,
                tuple((step, self.ranks[dst], n, t0, t1) for step, dst, n, t0, t1 in sends),
                label,
            )
        )
        return None if y is None else rebuild(y)

    def _move(self, c, flat, rows, row_size, op, root, dtype, device, backend):
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if self.mode == "native":
            empty = torch.empty(0, dtype=dtype, device=device)
            y, wire_rows, note = native.run(
                self,
                c,
                empty if flat is None else flat,
                rows,
                row_size,
                op=op,
                root=root,
                dtype=dtype,
                device=device,
                backend=backend,
            )
            model = build(c, None, self.size, root)
            table = comm_layout.chunk_table(c, model, wire_rows, row_size)
            sent, received = schedule_exec.count_bytes(model, table, self.rank, itemsize)
            return y, sent, received, model.algorithm, note, ()
        schedule = build(c, self.algorithms.get(c), self.size, root)
        sent_rows = layout.wire_rows(c, rows, self.size, root) if self.padded else rows
        buf, chunks, _ = schedule_exec.buffer(
            c, schedule, self.rank, sent_rows, row_size, flat, dtype, device
        )
        wire = schedule_exec.Wire(self.group, device, is_staged(backend, "send"))
        schedule_exec.execute(schedule, chunks, self.rank, op or "sum", wire)
        y = schedule_exec.result(c, buf, chunks, self.rank, root)
        if y is not None and sent_rows != rows:
            y = schedule_exec.unpad(c, y, rows, sent_rows, row_size, self.rank, root)
        return y, wire.sent, wire.received, schedule.algorithm, "", wire.sends

    def _wire_device(self, x) -> torch.device:
        if self.backend.name == "nccl":
            return self.device
        return torch.device("cpu")

    def _check(self, c, x, op, root, dim, other_dim, sizes, seq) -> int:
        """Local checks, before anything moves; returns x's ndim (the root's when x is None)."""
        who = f"rank {self.ranks[self.rank]}: {c} #{seq}"
        if op is not None:
            validate.reduce_op(who, op, REDUCE_OPS)
        if root is not None:
            validate.root(who, root, self.size)
        if x is None:
            if c not in ("broadcast", "scatter") or self.rank == root:
                raise ShapeError(
                    f"{who}: x is None; only non-root ranks of broadcast and scatter may pass None"
                )
            if dim is not None and dim < 0:
                raise ShapeError(
                    f"{who}: dim {dim} with x None; pass a dim >= 0 (the root's shape is not known here)"
                )
            return 1 if dim is None else dim + 1
        if not isinstance(x, torch.Tensor):
            raise DTypeError(f"{who}: x must be a torch.Tensor, got {type(x).__name__}")
        if op == "avg" and x.dtype not in FLOAT:
            raise DTypeError(f"{who}: op 'avg' needs a floating dtype, got {dtype_name(x.dtype)}")
        for name, d in (("dim", dim), ("concat_dim", other_dim)):
            if d is not None:
                validate.dim(who, name, d, tuple(x.shape))
        if c == "all_to_all" and dim % x.ndim == other_dim % x.ndim:
            raise ShapeError(f"{who}: split_dim and concat_dim are both {dim % x.ndim}; they must differ")
        if sizes is not None:
            along = other_dim if c == "all_to_all" else dim
            if len(sizes) != self.size:
                raise WorldSizeError(f"{who}: sizes has {len(sizes)} entries for a group of {self.size}")
            if sizes[self.rank] != x.shape[along]:
                raise ShapeError(
                    f"{who}: sizes[{self.rank}] is {sizes[self.rank]} but x has "
                    f"{x.shape[along]} along dim {along % x.ndim}"
                )
        return x.ndim


def algorithms_by_collective(algorithm) -> dict[str, str]:
    """{collective: algorithm}: a name applies to every collective that has it; a dict is checked."""
    if algorithm is None:
        return {}
    if isinstance(algorithm, dict):
        return {c: check_algorithm(c, a) for c, a in algorithm.items()}
    which = {c: algorithm for c, names in ALGORITHMS.items() if algorithm in names}
    if not which:
        known = sorted({a for names in ALGORITHMS.values() for a in names})
        raise AlgorithmError(f"algorithm {algorithm!r} is unknown; valid: {', '.join(known)}")
    return which
