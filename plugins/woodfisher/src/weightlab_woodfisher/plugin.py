"""Hook implementations of the woodfisher plugin. The data-free pruners (magnitude, global
magnitude, random) are core built-ins; this plugin adds the second-order ones. Pruner modules
import torch inside their methods, so listing plugins stays cheap."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_pruners():
    from weightlab_woodfisher.fisher import DiagFisherPruner
    from weightlab_woodfisher.woodfisher import WoodFisherPruner

    return [DiagFisherPruner, WoodFisherPruner]
