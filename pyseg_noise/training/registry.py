"""Name -> class registry of the training methods.

Built-in methods live one per module; their modules are listed in
:data:`BUILTIN_METHOD_MODULES` and imported the first time the registry is
read, so importing :mod:`pyseg_noise.training` stays cheap and a method's
module can import the training machinery without a cycle. Third-party
packages add methods through the ``pyseg_noise.methods`` entry-point group
(each entry point names a module that registers its classes on import).

Adding a method: write ``pyseg_noise/training/<name>.py`` with a
``@register_method`` class (see :class:`pyseg_noise.training.Method`) and
append its module to :data:`BUILTIN_METHOD_MODULES`. The command line
(``pyseg-noise train``, ``reproduce --methods``) lists what is registered.
"""
from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from typing import Dict, List

from .errors import ConfigError

__all__ = [
    "BUILTIN_METHOD_MODULES",
    "register_method",
    "get_method",
    "method_names",
]

#: modules whose import registers the built-in methods (one method family per module)
BUILTIN_METHOD_MODULES: List[str] = [
    "pyseg_noise.training.vnet",
    "pyseg_noise.training.densevoxnet",
    "pyseg_noise.training.pint",
    "pyseg_noise.training.tsman",
    "pyseg_noise.training.baselines",
]

_METHODS: Dict[str, type] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # one method's missing dependency must not hide the others
            warnings.warn(f"pyseg_noise: training methods of {module} are unavailable: {exc}")
    try:
        for ep in entry_points(group="pyseg_noise.methods"):
            ep.load()
    except Exception as exc:  # a broken plug-in must not break the built-in methods
        warnings.warn(f"pyseg_noise: could not load a method plug-in: {exc}")


def register_method(cls: type) -> type:
    """Class decorator: register ``cls`` under ``cls.name``.

    Raises:
        ValueError: empty name, or the name is taken by another class.
    """
    name = getattr(cls, "name", "")
    if not name or not isinstance(name, str):
        raise ValueError(f"{cls.__name__} must set a class attribute `name` to register")
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"method name {name!r} is already registered by {_METHODS[name].__qualname__}")
    _METHODS[name] = cls
    return cls


def method_names() -> List[str]:
    """Registered method names, sorted."""
    _load_builtins()
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The method class registered as ``name``.

    Raises:
        ConfigError: unknown name (the registered ones are listed).
    """
    _load_builtins()
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
