"""The GPU proof as one prepared command: `python -m reference.gpu_check` (`--quick` on CPU).

    __main__.py     the entry point: sections in order, each time-boxed, the report after each
    timebox.py      a per-section budget: cooperative checks plus an alarm that stops a section past it
    report.py       the report: JSON rewritten atomically after each section, markdown rendered from it
    facts.py        a. GPU, driver, CUDA, NCCL and torch versions, date
    equivalence.py  b. reference.check per (world size, comm, dtype), its JSON collected
    memory.py       c. torch.cuda.max_memory_allocated per rank against tpsim's predicted peak
    compute.py      d. the bf16/fp32 GEMMs of a TP MLP's shards, a square matmul, copy bandwidth
    predict.py      e. tpsim's predicted block forward + backward time against the measured one
    sizes.py        the sizes of every section, full and --quick, with the FLOPs that bound the run

It imports only what the GPU machine has (torch, numpy, ml_dtypes, rich and the stdlib, plus tpsim
and reference): tests/test_gpu_check.py holds it to that with an import hook.
"""
