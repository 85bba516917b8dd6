"""For component modules that must import without torch (listing and ``show`` never load it).

A component module keeps ``import torch`` inside its methods and ``if TYPE_CHECKING:`` for
annotations; :func:`no_grad` replaces the ``@torch.no_grad()`` decorator, which would need torch
when the class is defined::

    from weightlab.lazy import no_grad

    class MyNormalizer(Normalizer):
        @no_grad
        def apply(self, model, references, weights, data, graph=None):
            import torch
            ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def no_grad(fn: F) -> F:
    """``fn`` run under ``torch.no_grad()``, torch imported at the first call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
