"""weightlab plugin: magnitude, random, diagonal-Fisher and WoodFisher pruners.

- :mod:`.base`: which parameters are pruned, scores → masks.
- :mod:`.magnitude`: ``magnitude``, ``global_magnitude``, ``random``.
- :mod:`.gradients`: per-sample gradients with torch.func, streamed in chunks.
- :mod:`.fisher`: ``diag_fisher``.
- :mod:`.blocks`: block layout and groups of blocks, G_bᵀG_b accumulation, batched inverse,
  the Woodbury reference.
- :mod:`.plan`: the memory plan — blocks resident, or streamed in groups that fit the budget.
- :mod:`.woodfisher`: ``woodfisher`` (scores, OBS update, streamed passes, multi-step
  schedules).
- :mod:`.meter`: time and peak memory per stage.
"""
