"""The children's import hook: the real loader of the modules it names, wrapped.

The offline guard (``child/offline.py``) and the torchvision check (``child/torchvision_ops.py``) each act when a
module is first imported in a child. Both do it the same way: a finder first on ``sys.meta_path`` asks the finders
after it for the module's spec, as Python would, and hands the loader it finds to a wrapper that runs the real
loader's ``exec_module`` and then does its own work. Nothing else of the import changes.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Callable


class WrappedLoader(importlib.abc.Loader):
    """The real loader of a module, whose ``exec_module`` a subclass extends; everything else is the real one's."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)

    def __getattr__(self, name):  # get_source, is_package, get_resource_reader ... of the real loader
        return getattr(self.inner, name)


class WrappingFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder for the modules ``wants`` names: their spec as the other finders give it, the loader
    wrapped by ``wrap``; every other module is left to the other finders."""

    def __init__(self, wants: Callable[[str], bool], wrap: Callable[[importlib.abc.Loader], importlib.abc.Loader]):
        self.wants, self.wrap = wants, wrap

    def find_spec(self, fullname, path, target=None):
        if not self.wants(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = self.wrap(spec.loader)
                return spec
        return None
