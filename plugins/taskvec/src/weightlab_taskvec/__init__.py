"""weightlab plugin: task-vector merging of models fine-tuned from one base.

- :mod:`.taskvec`: the math on state dicts — task vectors, task arithmetic, TIES (trim, elect,
  disjoint mean), DARE (drop and rescale), Model Stock (the angle ratio), SLERP.
- :mod:`.methods`: the registered merge methods ``task_arithmetic``, ``ties``, ``dare``,
  ``model_stock``, ``slerp`` (``weightlab merge A B --base BASE --method …``).
"""
