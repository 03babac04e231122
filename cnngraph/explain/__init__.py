"""Explain stage: one image through its image network (docs/METHOD.md section 10), and faithfulness.

``cnngraph.explain(model, images)`` works as a function too (this package is callable), so the
top-level API reads like the other stages; see :func:`cnngraph.explain.api.explain`.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from cnngraph.explain.api import explain

        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
