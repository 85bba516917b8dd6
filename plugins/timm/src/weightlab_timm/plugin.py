"""Hook implementations of the timm plugin. The model module imports timm and torch inside its
methods, so listing and showing stay cheap."""

from weightlab import hookimpl


@hookimpl
def weightlab_register_models():
    from weightlab_timm.model import TimmModel

    return [TimmModel]
