"""weightlab plugin: timm image classifiers by name, randomly initialised.

- :mod:`.model`: the ``timm`` model family (``timm/<name>``, and ``<name>`` when no built-in
  family claims it).
- :mod:`.catalog`: the snapshot of timm's model names and pretrained input configurations
  (``models.json``) that lets weightlab resolve names without importing timm or torch.
"""
