"""reference.bugs: tpsim.bugs's mutations on real torch.distributed ranks, file for file.

    linear.py     RowBiasEveryRank, ReduceScatterMean, InputIsParallelFullInput, SPRowBiasGradUnreduced,
                  ColumnInputGradUnreduced
    norm.py       SPNormGradUnreduced (no copy_to on [w; b]: the [dw; db] all-reduce is gone)
    loss.py       VocabPaddingUnmasked, UnevenShardPadding, LabelSmoothingPerRank
    gqa.py        KVHeadGradsUnreduced (the QKV projection built without its KV sub-group Comm)
    rope.py       SequenceRoPE on this rank's sequence shard, and RoPEPositionsRestart
    pipeline.py   TiedEmbeddingGradsUnreduced (a PipelinedGPT whose embedding group never all-reduces)
    grad_norm.py  the global grad norm on one rank, and its double-counting twin
    catalogue.py  MIRROR: name -> (buggy layer, correct layer) with tpsim's dims and seeds
    check.py      python -m reference.bugs.check: every mutation caught on gloo, mirroring tpsim
"""
