"""weightlab plugin: diagonal-Fisher and WoodFisher pruners (magnitude, global magnitude and
random are core built-ins: :mod:`weightlab.pruners`).

- :mod:`.gradients`: per-sample gradients with torch.func, streamed in chunks.
- :mod:`.fisher`: ``diag_fisher``.
- :mod:`.blocks`: block layout and groups of blocks, G_bᵀG_b accumulation, batched inverse,
  the Woodbury reference.
- :mod:`.plan`: the memory plan — blocks resident, or streamed in groups that fit the budget.
- :mod:`.woodfisher`: ``woodfisher`` (scores, OBS update, streamed passes, multi-step
  schedules).
- :mod:`.meter`: time and peak memory per stage.
"""
