"""Restricted loading of ultralytics checkpoints, in the child that imports the target's ultralytics.

A ``.pt`` checkpoint is a pickle, and a pickle is a program: every global it names is imported and may be called.
``load_checkpoint`` unpickles with an allow-list instead of plain ``pickle``, so that a checkpoint from a fork can be
examined and loaded into a patched stock ultralytics without running anything a model checkpoint never needs:

* the fork's own MHSA class (``ultralytics.nn.modules.MHSA.MHSA``, ``ultralytics.nn.Addmodules.Attention.MHSA``,
  YOLOv5-era ``models.common.MHSA``, ... any module path) is *mapped* to the patched class
  (``ultralytics.nn.modules.conv.MHSA``), and every MHSA object loaded is checked to hold the tutorial's state;
* other custom classes the stock target lacks are collected, all of them, and refused in one line;
* a global outside the allow-list (``os.system``, ``builtins.exec``, ``torch.hub.load``, ...) is refused the moment
  the pickle names it, before anything could call it.

Why our own unpickler and not ``torch.load(weights_only=True)`` with safe globals. Torch's weights-only unpickler
calls any allow-listed class with the pickle's arguments (``REDUCE``), and an ultralytics checkpoint needs
``nn.Module`` subclasses on the list; ``ultralytics.engine.model.Model`` is one, and ``Model("https://...")``
downloads and loads another file with plain pickle. It also needs torch >= 2.6 for the ``(class, "module.Name")``
aliases a module-path mapping requires, and it stops at the first unknown global. So the loader passes
``pickle_module=`` (supported by every torch the tool supports, >= 1.13) a pure-Python ``pickle._Unpickler`` whose
``find_class`` resolves globals through the allow-list and whose object-building opcodes are restricted:

* ``REDUCE`` (a call) only on the functions listed in ``_CALLABLE`` (torch's tensor/parameter rebuild functions,
  ``torch.Size``, ``torch.device``, ``OrderedDict``, builtin containers, ``_codecs.encode``, numpy's
  ``_reconstruct``/``scalar``/``dtype``, pathlib and datetime classes, ``SimpleNamespace`` and ultralytics'
  ``IterableSimpleNamespace``) and on guarded versions of ``getattr``, ``copyreg._reconstructor``,
  ``copyreg.__newobj__`` and ``torch._tensor._rebuild_from_type_v2``; never on an ``nn.Module`` class;
* ``NEWOBJ`` (``cls.__new__(cls)``, how protocol 2 stores every module object; no ``__init__`` runs) on allowed
  classes: ``torch.nn.Module`` subclasses from ``torch.nn.*`` and ``ultralytics.*``, the mapped layer classes, the
  classes of ultralytics' loss and assigner modules (older releases pickle ``model.criterion``),
  ``argparse.Namespace``, the namespaces above, and the classes ``REDUCE`` may call;
* ``INST``/``OBJ`` (protocol 0/1 class calls) only without arguments; ``BUILD`` (setting state) as plain pickle
  does it, but never into a class, function, module or enum member (that would change them for the whole process).

What real checkpoints hold. ``pickletools`` over yolov8n checkpoints written by ultralytics 8.0.200, 8.3.52 and
8.4.190 themselves (``yolo train ... save_period=1``: ``last.pt``, ``best.pt``, ``epoch0.pt``) and trainer-style
dicts (``{"model": deepcopy(model).half(), "ema": ..., "train_args": vars(args), "train_metrics": numpy floats,
...}``) found, besides the ``torch.nn.modules.*`` and ``ultralytics.nn.*`` module classes: ``torch._utils.
_rebuild_tensor_v2``, ``torch._utils._rebuild_parameter``, ``torch.{Float,Half,Long}Storage`` (handled by torch),
``torch.Size``, ``torch.device``, ``collections.OrderedDict``, ``__builtin__.set``, ``_codecs.encode``,
``numpy._core.multiarray.scalar``, ``numpy.dtype``, ``ultralytics.utils.IterableSimpleNamespace`` (the model's
``args`` until ``strip_optimizer``), and in 8.0.200's stripped ``best.pt`` and 8.3.52's ``epoch0.pt`` the loss:
``ultralytics.utils.loss.{v8DetectionLoss,BboxLoss,DFLoss}``, ``ultralytics.utils.tal.TaskAlignedAssigner``,
``torch.nn.modules.loss.BCEWithLogitsLoss``. The rest of the list covers what ultralytics' own restricted loader
(8.4's ``_SafeLoad``) knows other checkpoints to hold: ``getattr(Detect, "forward")`` (segment/pose heads of 8.0.x),
torchvision's classification transforms, pathlib paths (Windows paths read as local ones), the
``ultralytics.yolo.*`` module paths of releases before 8.0.1xx and the YOLOv9/v10 class renames.

Mapping. A global whose *name* is a provided layer (``MHSA``) and whose module is not the patched one is mapped,
whatever the module: forks keep it under ``ultralytics.*``, YOLOv5-era code under ``models.common``, training
scripts under ``__main__``. The source module is never imported. Every MHSA object loaded, mapped or not, must hold
the tutorial's state (``heads``, ``pos``, ``softmax``, ``query``/``key``/``value`` as ``Conv2d(C, C, 1)`` with bias,
``rel_h_weight``/``rel_w_weight`` of the right shapes iff ``pos``); a class of the same name built otherwise
(``nn.MultiheadAttention``, ``qkv``/``proj``) is refused, naming what is missing and what is not expected.

Module classification, for a global that is neither allow-listed nor mapped: under ``ultralytics.`` the target's
module is imported (the target's own code: a user layer's ``ultralytics.nn.modules.user_ECA`` once ``apply --layer``
wrote it, never mapped by name) and a missing module or attribute is *missing* (for a user layer's path, the refusal
names ``apply --layer``); under ``torch.nn.`` the
same; a name from torch, numpy or the standard library that exists but is not on the list is *forbidden*; anything
else (``timm``, ``models.common``, ``__main__``) is *missing* and never imported. Missing globals get a placeholder
so that one pass lists them all; forbidden ones stop the load at once.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import enum
import importlib
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

def _default_layers() -> dict[str, str]:
    """The layers whose pickled state is the tutorial's, at the module where the patch puts them (from patches/)."""
    from mhsa_patch.patches import LAYERS

    return {spec.name: "ultralytics.nn.modules.conv" for spec in LAYERS if spec.tutorial_state}


DEFAULT_LAYERS = _default_layers()

FORBIDDEN_WHY = "checkpoints are code, and this one calls something a model checkpoint never needs"


class CheckpointRefused(Exception):
    """Why a checkpoint was not loaded, in one line (naming the file and the global, module or key at fault)."""


# ---------------------------------------------------------------------------------------------------- allow-list

# Globals a pickle may *call* (REDUCE), by module: what torch, numpy and the standard library put in checkpoints.
_CALLABLE = {
    "torch._utils": (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_meta_tensor_no_storage",
    ),
    "torch": ("Size", "device"),
    "collections": ("OrderedDict",),
    "builtins": (
        "set", "frozenset", "slice", "complex", "bytearray", "bytes", "range",
        "dict", "list", "tuple", "int", "float", "str", "bool", "object",
    ),
    "_codecs": ("encode",),
    "codecs": ("encode",),
    "numpy.core.multiarray": ("_reconstruct", "scalar"),
    "numpy._core.multiarray": ("_reconstruct", "scalar"),
    "numpy": ("dtype",),
    "pathlib": ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"),
    "pathlib._local": ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"),
    "datetime": ("datetime", "date", "time", "timedelta", "timezone"),
    "types": ("SimpleNamespace",),
}

# Classes a pickle may create with NEWOBJ (``cls.__new__(cls)``) besides the module classes and those above.
_CONSTRUCTIBLE = {"argparse": ("Namespace",)}

# Globals a pickle may only name (never call or create): torch's dtype, layout and memory-format constants, the
# tensor and array types (numpy's ``_reconstruct`` takes ``ndarray`` as an argument).
_VALUE_TYPES = ("dtype", "layout", "memory_format")
_VALUES = {"torch": ("Tensor",), "torch._tensor": ("Tensor",), "numpy": ("ndarray",)}

# ultralytics modules whose (non-Module) classes older releases pickle with the model: ``model.criterion``.
_CLASS_MODULES = (
    "ultralytics.utils.loss",
    "ultralytics.utils.tal",
    "ultralytics.yolo.utils.loss",
    "ultralytics.yolo.utils.tal",
    "ultralytics.nn.distill_model",
)
_NAMESPACE_MODULES = ("ultralytics.utils", "ultralytics.yolo.utils")

# Classification checkpoints pickle their preprocessing (what ultralytics 8.4's _SafeLoad allows of torchvision).
_TORCHVISION = {
    "torchvision.transforms.transforms": ("Compose", "Normalize", "Resize", "CenterCrop", "ToTensor"),
    "torchvision.transforms.functional": ("InterpolationMode",),
}

# Module paths of older releases and renamed classes, as ultralytics' torch_safe_load maps them. Applied only when
# the name does not resolve as it is.
_MODULE_RENAMES = {
    "ultralytics.yolo.utils": "ultralytics.utils",
    "ultralytics.yolo.v8": "ultralytics.models.yolo",
    "ultralytics.yolo.data": "ultralytics.data",
    "numpy._core": "numpy.core",
    "numpy.core": "numpy._core",
    "pathlib._local": "pathlib",
}
_ATTRIBUTE_RENAMES = {
    "ultralytics.nn.modules.block.Silence": ("torch.nn.modules.linear", "Identity"),  # YOLOv9e
    "ultralytics.nn.tasks.YOLOv10DetectionModel": ("ultralytics.nn.tasks", "DetectionModel"),
    "ultralytics.utils.loss.v10DetectLoss": ("ultralytics.utils.loss", "E2EDetectLoss"),
}

# The standard library (a name from it outside the list is forbidden, never "missing").
_STDLIB_FALLBACK = frozenset(
    "os posix nt sys subprocess builtins shutil importlib runpy socket pty code codeop pickle marshal ctypes "
    "webbrowser io functools operator types inspect multiprocessing threading signal tempfile glob pathlib urllib "
    "http ftplib smtplib sqlite3 zipfile tarfile base64 zlib gc platform asyncio select mmap copy copyreg "
    "collections itertools timeit pdb trace cProfile profile tkinter xml json csv logging email".split()
)
_TRUSTED_TOPS = frozenset({"torch", "numpy", "torchvision", "_codecs", "__builtin__"})


def _is_stdlib(top: str) -> bool:
    names = getattr(sys, "stdlib_module_names", None) or _STDLIB_FALLBACK
    return top in names or top in _STDLIB_FALLBACK


# ---------------------------------------------------------------------------------------------------- the session


class _Missing:
    """Placeholder for a global the target lacks: takes any arguments and state, runs nothing."""

    _mhsa_patch_missing = ""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state


class _Session:
    """The state of one load: the layer map, what was resolved, mapped, missing, and the layer objects created."""

    def __init__(self, path: str, layers: dict[str, str]):
        import torch

        self.torch = torch
        self.path = path
        self.layers = dict(layers)
        self.globals: set[str] = set()
        self.mapped: dict[str, str] = {}
        self.renamed: dict[str, str] = {}
        self.missing: dict[str, type] = {}  # full name -> placeholder class, in the order first seen
        self.callable: set[int] = set()  # ids of objects REDUCE may call
        self.constructible: set[int] = set()  # ids of classes NEWOBJ may create
        self.layer_classes: dict[int, str] = {}  # id(class) -> layer name, for the classes of DEFAULT_LAYERS
        self.layer_objects: list[tuple[object, str]] = []  # (object, the class's name in the pickle)
        self.checked: frozenset[str] = frozenset(layers)  # the names whose objects hold the tutorial MHSA's state
        self._cache: dict[str, object] = {}
        self._keep: list[object] = []  # keeps the objects whose ids are in the sets above alive
        self.safe = {
            "builtins.getattr": _guarded(self, _safe_getattr),
            "copyreg._reconstructor": _guarded(self, _safe_reconstructor),
            "copyreg.__newobj__": _guarded(self, _safe_newobj),
            "copyreg.__newobj_ex__": _guarded(self, _safe_newobj_ex),
            "torch._tensor._rebuild_from_type_v2": _guarded(self, _safe_rebuild_from_type_v2),
            "torch._tensor._rebuild_from_type": _guarded(self, _safe_rebuild_from_type),
        }
        for f in self.safe.values():
            self.allow_call(f)

    # -- sets of allowed objects (by id: classes and functions are not all hashable alike)

    def allow_call(self, obj) -> None:
        self._keep.append(obj)
        self.callable.add(id(obj))
        if isinstance(obj, type):
            self.constructible.add(id(obj))

    def allow_new(self, obj) -> None:
        self._keep.append(obj)
        self.constructible.add(id(obj))

    def may_call(self, obj) -> bool:
        return id(obj) in self.callable or _is_placeholder(obj)

    def may_create(self, cls) -> bool:
        return id(cls) in self.constructible or _is_placeholder(cls)

    # -- refusals

    def forbidden(self, full: str) -> CheckpointRefused:
        return CheckpointRefused(f"{self.path}: mhsa-patch refuses to unpickle {full}: {FORBIDDEN_WHY}")

    def refuse_call(self, func, what: str = "call") -> CheckpointRefused:
        return CheckpointRefused(
            f"{self.path}: mhsa-patch refuses to unpickle a {what} of {_qualname(func)}: {FORBIDDEN_WHY}"
        )

    # -- resolving one global

    def resolve(self, module: str, name: str):
        full = f"{module}.{name}"
        self.globals.add(full)
        if full not in self._cache:
            self._cache[full] = self._resolve(module, name, full)
        return self._cache[full]

    def _resolve(self, module: str, name: str, full: str):
        if "." in name:  # protocol 4 names nested attributes directly ("Detect.forward")
            head, *rest = name.split(".")
            obj = self.resolve(module, head)
            for part in rest:
                obj = _safe_getattr(self, obj, part)
            return obj
        if full in self.safe:
            return self.safe[full]
        if name in self.layers:
            return self._layer(module, name, full)
        top = module.split(".")[0]
        if "__main__" in module.split("."):  # a script's class: never imported (nor a package's __main__ run)
            return self.placeholder(module, name, full)
        if top == "ultralytics" or module == "torch.nn" or module.startswith("torch.nn."):
            return self._module_class(module, name, full)
        if module in _CALLABLE and name in _CALLABLE[module]:
            obj = self._import(module, name, full)
            if not _is_placeholder(obj):
                self.allow_call(obj)
            return obj
        if module in _CONSTRUCTIBLE and name in _CONSTRUCTIBLE[module]:
            obj = self._import(module, name, full)
            if not _is_placeholder(obj):
                self.allow_new(obj)
            return obj
        if module in _VALUES and name in _VALUES[module]:
            return self._import(module, name, full)
        if module == "torch":
            obj = _getattr_or_none(self.torch, name)
            if type(obj).__name__ in _VALUE_TYPES and type(obj).__module__ == "torch":
                return obj
            raise self.forbidden(full)
        if module in _TORCHVISION and name in _TORCHVISION[module]:
            obj = self._import(module, name, full)
            if isinstance(obj, type) and issubclass(obj, enum.Enum):
                self.allow_call(obj)  # EnumClass(value) is a look-up
            elif not _is_placeholder(obj):
                self.allow_new(obj)
            return obj
        if top in _TRUSTED_TOPS or _is_stdlib(top):
            raise self.forbidden(full)
        return self.placeholder(module, name, full)  # a foreign package or script: never imported

    def _layer(self, module: str, name: str, full: str):
        """A provided layer: the patched class, whatever module the checkpoint names (never imported)."""
        target = self.layers[name]
        try:
            cls = getattr(importlib.import_module(target), name)
        except (ImportError, AttributeError):
            try:
                import ultralytics

                where = f"ultralytics {ultralytics.__version__} at {Path(ultralytics.__file__).parent}"
            except ImportError:
                where = "this environment"
            raise CheckpointRefused(
                f"{self.path} holds {name} ({module}) but {where} has no {target}.{name}; "
                f"run 'mhsa-patch apply' first"
            ) from None
        if module != target:
            self.mapped[full] = f"{target}.{name}"
        self.layer_classes[id(cls)] = name
        self.allow_new(cls)
        return cls

    def _module_class(self, module: str, name: str, full: str):
        """A global under ``ultralytics.`` or ``torch.nn.``: a module class (or a known data class), or refused."""
        obj = self._import(module, name, full)
        if _is_placeholder(obj):
            return obj
        torch = self.torch
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            self.allow_new(obj)
            return obj
        if isinstance(obj, type) and obj.__module__ in _CLASS_MODULES and obj.__module__ in (module, _renamed_module(module)):
            self.allow_new(obj)
            return obj
        if (
            isinstance(obj, type)
            and issubclass(obj, types.SimpleNamespace)
            and obj.__module__ in _NAMESPACE_MODULES
            and name == "IterableSimpleNamespace"
        ):
            self.allow_call(obj)
            return obj
        if isinstance(obj, type) and obj in (torch.nn.Parameter, getattr(torch.nn, "Buffer", torch.nn.Parameter)):
            return obj
        raise self.forbidden(full)

    def _import(self, module: str, name: str, full: str):
        """``module.name`` from an installed module (renamed if need be), or a placeholder when it is not there."""
        for mod, attr in _candidates(module, name, full):
            try:
                m = importlib.import_module(mod)
            except Exception:  # noqa: BLE001 - missing, or failing to import in this environment: not there
                continue
            obj = _getattr_or_none(m, attr)
            if obj is not None:
                if (mod, attr) != (module, name):
                    self.renamed[full] = f"{mod}.{attr}"
                return obj
        return self.placeholder(module, name, full)

    def placeholder(self, module: str, name: str, full: str):
        if full not in self.missing:
            cls = type(name, (_Missing,), {"__module__": module, "__qualname__": name, "_mhsa_patch_missing": full})
            self.missing[full] = cls
        return self.missing[full]


def _candidates(module: str, name: str, full: str):
    if module in ("pathlib", "pathlib._local") and name in ("WindowsPath", "PosixPath"):
        # the other system's concrete path cannot be created here: read it as this system's, as ultralytics does
        yield "pathlib", "WindowsPath" if sys.platform == "win32" else "PosixPath"
    yield module, name
    for old, new in _MODULE_RENAMES.items():
        if module == old or module.startswith(old + "."):
            yield new + module[len(old):], name
    if full in _ATTRIBUTE_RENAMES:
        yield _ATTRIBUTE_RENAMES[full]


def _renamed_module(module: str) -> str:
    for old, new in _MODULE_RENAMES.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old):]
    return module


def _getattr_or_none(obj, name):
    try:
        return getattr(obj, name)
    except Exception:  # noqa: BLE001
        return None


def _is_placeholder(obj) -> bool:
    return (isinstance(obj, type) and issubclass(obj, _Missing)) or isinstance(obj, _Missing)


def _qualname(obj) -> str:
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object"


# ------------------------------------------------------------------------ guarded versions of generic callables


def _guarded(session, fn):
    def call(*args):
        return fn(session, *args)

    call.__qualname__ = call.__name__ = fn.__name__
    return call


def _safe_getattr(session, obj, name):
    """``getattr`` as checkpoints use it: a method of a torch.nn/ultralytics.nn module class (``Detect.forward``),
    ``forward`` of a module object, an enum member. Nothing else."""
    torch = session.torch
    if isinstance(obj, type) and id(obj) in session.constructible and issubclass(obj, torch.nn.Module):
        value = getattr(obj, name, None)
        mod = getattr(value, "__module__", "") or ""
        if not name.startswith("_") and callable(value) and (mod.startswith("ultralytics.nn") or mod.startswith("torch.nn")):
            return value
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and id(obj) in session.callable and name in obj.__members__:
        return obj[name]
    if isinstance(obj, torch.nn.Module) and id(type(obj)) in session.constructible and name in ("forward", "forward_fuse"):
        return getattr(obj, name)
    if _is_placeholder(obj):
        return obj
    raise CheckpointRefused(
        f"{session.path}: mhsa-patch refuses to unpickle getattr({_qualname(obj)}, {name!r}): {FORBIDDEN_WHY}"
    )


_PLAIN_BASES = (object, dict, list, set, frozenset, tuple, int, float, str, bytes, bytearray, complex, bool)


def _safe_reconstructor(session, cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 objects) for allowed classes on a builtin base only."""
    if not isinstance(cls, type) or not session.may_create(cls) or base not in _PLAIN_BASES:
        raise session.refuse_call(cls, "reconstruction")
    return _created(session, cls, copyreg._reconstructor(cls, base, state))


def _safe_newobj(session, cls, *args):
    if not isinstance(cls, type) or not session.may_create(cls):
        raise session.refuse_call(cls, "creation")
    return _created(session, cls, cls.__new__(cls, *args))


def _safe_newobj_ex(session, cls, args, kwargs):
    if not isinstance(cls, type) or not session.may_create(cls):
        raise session.refuse_call(cls, "creation")
    return _created(session, cls, cls.__new__(cls, *args, **kwargs))


def _tensor_type(session, new_type) -> bool:
    torch = session.torch
    allowed = [torch.Tensor, torch.nn.Parameter]
    if hasattr(torch.nn, "Buffer"):
        allowed.append(torch.nn.Buffer)
    return any(new_type is t for t in allowed)


def _safe_rebuild_from_type_v2(session, func, new_type, args, state):
    if not session.may_call(func) or isinstance(func, type) or not _tensor_type(session, new_type):
        raise session.refuse_call(func)
    from torch._tensor import _rebuild_from_type_v2

    return _rebuild_from_type_v2(func, new_type, args, state)


def _safe_rebuild_from_type(session, func, type_, args, dict_):
    if not session.may_call(func) or isinstance(func, type) or not _tensor_type(session, type_):
        raise session.refuse_call(func)
    from torch._tensor import _rebuild_from_type

    return _rebuild_from_type(func, type_, args, dict_)


# ---------------------------------------------------------------------------------------------------- unpickler


# Objects a BUILD must not change: shared by the whole process (setting a class attribute would reach every model).
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, enum.Enum)


def _restricted_pickle_module(session: _Session) -> types.ModuleType:
    """A ``pickle``-like module for ``torch.load(pickle_module=...)`` whose unpickler follows the session's rules."""

    class Unpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be overridden one by one
        dispatch = dict(pickle._Unpickler.dispatch)

        def find_class(self, module, name):
            if self.proto < 3 and self.fix_imports:
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    module, name = _compat_pickle.NAME_MAPPING[(module, name)]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    module = _compat_pickle.IMPORT_MAPPING[module]
            return session.resolve(module, name)

        def load_reduce(self):
            stack = self.stack
            args = stack.pop()
            func = stack[-1]
            if _is_placeholder(func):
                stack[-1] = func.__new__(func) if isinstance(func, type) else func
                return
            if not session.may_call(func):
                raise session.refuse_call(func)
            stack[-1] = func(*args)

        dispatch[pickle.REDUCE[0]] = load_reduce

        def load_newobj(self):
            args = self.stack.pop()
            cls = self.stack.pop()
            if not isinstance(cls, type) or not session.may_create(cls):
                raise session.refuse_call(cls, "creation")
            self.append(_created(session, cls, cls.__new__(cls, *args)))

        dispatch[pickle.NEWOBJ[0]] = load_newobj

        def load_newobj_ex(self):
            kwargs = self.stack.pop()
            args = self.stack.pop()
            cls = self.stack.pop()
            if not isinstance(cls, type) or not session.may_create(cls):
                raise session.refuse_call(cls, "creation")
            self.append(_created(session, cls, cls.__new__(cls, *args, **kwargs)))

        dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

        def load_build(self):  # state goes into objects the pickle made, never into classes, functions, modules
            inst = self.stack[-2]  # below the state
            if isinstance(inst, _SHARED):
                raise session.refuse_call(inst, "state change")
            pickle._Unpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

        def _instantiate(self, klass, args):  # INST and OBJ (protocol 0/1 class calls)
            if args or not isinstance(klass, type) or not session.may_create(klass):
                raise session.refuse_call(klass)
            self.append(_created(session, klass, klass.__new__(klass)))

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    def loads(data, **kwargs):
        return load(io.BytesIO(data), **kwargs)

    module = types.ModuleType("mhsa_patch_restricted_pickle")
    module.Unpickler = Unpickler
    module.load = load
    module.loads = loads
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _created(session: _Session, cls, obj):
    """Note the objects of a provided layer class (their state is checked once the pickle is read)."""
    name = session.layer_classes.get(id(cls))
    if name is not None:
        session.layer_objects.append((obj, name))
    return obj


# ---------------------------------------------------------------------------------------------------- checks


def tutorial_state_problems(m) -> str | None:
    """``None`` when ``m`` holds the tutorial MHSA's state, else what is wrong (missing/unexpected names, shapes)."""
    import torch.nn as nn

    d = m.__dict__
    mods, params, bufs = d.get("_modules") or {}, d.get("_parameters") or {}, d.get("_buffers") or {}
    pos = bool(d.get("pos")) if "pos" in d else None
    want_params = ("rel_h_weight", "rel_w_weight") if pos else ()
    missing = [k for k in ("heads", "pos") if k not in d]
    missing += [k for k in ("query", "key", "value", "softmax") if k not in mods]
    missing += [k for k in want_params if params.get(k) is None]
    unexpected = [k for k in mods if k not in ("query", "key", "value", "softmax")]
    unexpected += [k for k in params if k not in want_params]
    unexpected += list(bufs)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected) + (" (pos is False)" if pos is False and any(
                k in ("rel_h_weight", "rel_w_weight") for k in unexpected) else ""))
        return "; ".join(parts)
    heads = d["heads"]
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        return f"heads={heads!r} is not a positive int"
    if not isinstance(d["pos"], (bool, int)) or d["pos"] not in (0, 1):
        return f"pos={d['pos']!r} is not a bool"
    channels = None
    for k in ("query", "key", "value"):
        c = mods[k]
        if type(c) is not nn.Conv2d:
            return f"{k} is a {type(c).__name__}, not a Conv2d"
        if channels is None:
            channels = c.in_channels
        shape = (c.in_channels, c.out_channels, tuple(c.kernel_size), tuple(c.stride), tuple(c.padding),
                 tuple(c.dilation), c.groups, c.padding_mode)
        if shape != (channels, channels, (1, 1), (1, 1), (0, 0), (1, 1), 1, "zeros"):
            return (f"{k} is Conv2d({c.in_channels}, {c.out_channels}, kernel_size={tuple(c.kernel_size)}, "
                    f"stride={tuple(c.stride)}, padding={c.padding}, groups={c.groups}), not Conv2d({channels}, "
                    f"{channels}, 1)")
        if c.bias is None:
            return f"{k} has no bias"
        if tuple(c.weight.shape) != (channels, channels, 1, 1) or tuple(c.bias.shape) != (channels,):
            return f"{k}.weight is {tuple(c.weight.shape)}, not {(channels, channels, 1, 1)}"
    if channels % heads:
        return f"{channels} channels are not divisible by heads={heads}"
    sm = mods["softmax"]
    if type(sm) is not nn.Softmax or sm.dim not in (-1, 3):
        return f"softmax is {sm!r}, not Softmax(dim=-1)"
    if pos:
        d_head = channels // heads
        h, w = tuple(params["rel_h_weight"].shape), tuple(params["rel_w_weight"].shape)
        if len(h) != 5 or h[:4] != (1, heads, d_head, 1):
            return f"rel_h_weight is {h}, not (1, {heads}, {d_head}, 1, height)"
        if len(w) != 5 or w[:3] != (1, heads, d_head) or w[4] != 1:
            return f"rel_w_weight is {w}, not (1, {heads}, {d_head}, width, 1)"
    return None


def _where(ckpt, obj) -> str:
    """Where ``obj`` sits in the checkpoint: ``ema.model.10`` (first of the dict's modules that holds it)."""
    import torch

    items = ckpt.items() if isinstance(ckpt, dict) else [("model", ckpt)]
    for key, value in items:
        if isinstance(value, torch.nn.Module):
            for name, m in value.named_modules():
                if m is obj:
                    return f"{key}.{name}" if name else str(key)
    return "(outside the models)"


# ---------------------------------------------------------------------------------------------------- loading


def _not_a_checkpoint(path: str, e: BaseException) -> CheckpointRefused:
    """What a file torch.load cannot read is, in words: torch's own message for random bytes is ``KeyError: 72``."""
    with open(path, "rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path):
        what = f"a zip archive, but not a PyTorch checkpoint ({_one_line(e)})"
    elif head[:1] == b"\x80":  # a pickle's PROTO opcode: torch's legacy format or a bare pickle, cut short or damaged
        what = f"a damaged or truncated pickle, not a PyTorch checkpoint ({_one_line(e)})"
    else:
        what = "not a PyTorch checkpoint: neither a zip nor a pickle file (truncated, or another format)"
    return CheckpointRefused(f"{path} is {what}")


def unpickle(
    path: str | Path, layers: dict[str, str] | None = None, checked: frozenset[str] | None = None, map_location="cpu"
) -> tuple[object, dict]:
    """``(ckpt, report)``: the checkpoint as stored, read with the restricted unpickler; its MHSA objects checked.

    Raises :class:`CheckpointRefused` for a forbidden global (before it can run), for every custom class the target
    lacks (all named in one line), for a layer object that is not the tutorial's, and for what is not a checkpoint.
    """
    import torch

    path = str(path)
    session = _Session(path, DEFAULT_LAYERS if layers is None else layers)
    session.checked = frozenset(DEFAULT_LAYERS) if checked is None else checked
    if not Path(path).is_file():
        raise CheckpointRefused(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (OSError, zipfile.BadZipFile) as e:
            raise CheckpointRefused(f"{path} is not a PyTorch checkpoint: {_one_line(e)}") from None
        if any(n.endswith("constants.pkl") for n in names):
            raise CheckpointRefused(f"{path} is a TorchScript archive, not a checkpoint; load the original .pt")
    try:
        ckpt = torch.load(path, map_location=map_location, pickle_module=_restricted_pickle_module(session),
                          weights_only=False)
    except CheckpointRefused:
        raise
    except Exception as e:  # noqa: BLE001 - anything else the file does wrong: one line
        if session.missing:
            raise _missing_error(session) from None
        raise _not_a_checkpoint(path, e) from None
    if session.missing:
        raise _missing_error(session)
    report = {"path": path, "mapped": dict(session.mapped), "layers": [], "renamed": dict(session.renamed),
              "globals": sorted(session.globals)}
    for obj, name in session.layer_objects:
        where = _where(ckpt, obj)
        if name not in session.checked:  # a block built on the checked layer (BoT3): its MHSA objects are checked
            report["layers"].append({"where": where, "class": f"{session.layers[name]}.{name}"})
            continue
        problem = tutorial_state_problems(obj)
        source = next((k for k, v in session.mapped.items() if k.rsplit(".", 1)[1] == name), None)
        source = source or f"{session.layers[name]}.{name}"
        if problem:
            raise CheckpointRefused(
                f"{path}: {source} at {where} is not the tutorial's {name} that mhsa-patch provides: {problem}"
            )
        report["layers"].append({
            "where": where,
            "class": source,
            "channels": obj.query.in_channels,
            "heads": obj.heads,
            "pos": bool(obj.pos),
        })
    return ckpt, report


def _missing_error(session: _Session) -> CheckpointRefused:
    names = ", ".join(f"{full.rsplit('.', 1)[1]} ({full.rsplit('.', 1)[0]})" for full in session.missing)
    # a user layer's class path (apply --layer): ultralytics.nn.modules.user_<Name>.<Name>, accepted once applied
    user = [full.rsplit(".", 1)[1] for full in session.missing if _is_user_layer_path(full)]
    if user:
        return CheckpointRefused(
            f"{session.path}: this checkpoint needs modules that are not applied here: {names}; run 'mhsa-patch "
            f"apply --layer FILE.py' with the file that defines {' and '.join(user)} first"
        )
    return CheckpointRefused(
        f"{session.path}: this checkpoint needs modules that the patch does not provide: {names}; "
        f"load it with the code that trained it"
    )


def _is_user_layer_path(full: str) -> bool:
    """``ultralytics.nn.modules.user_ECA.ECA``: where ``apply --layer`` puts a user layer (``patching.userlayers``)."""
    parts = full.split(".")
    return len(parts) == 5 and parts[:3] == ["ultralytics", "nn", "modules"] and parts[3] == f"user_{parts[4]}"


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


def load_checkpoint(
    path: str | Path,
    layers: dict[str, str] | None = None,
    *,
    checked: frozenset[str] | None = None,
    fuse: bool = False,
    inplace: bool = True,
) -> tuple[object, dict, dict]:
    """``(model, ckpt, report)``: :func:`unpickle`, then what the target's ultralytics does after ``torch.load``.

    ``model`` is ``ckpt["ema"] or ckpt["model"]`` in FP32 and eval mode with ``args`` (defaults overlaid with
    ``train_args``; filtered to the default keys on releases whose loader does that), ``pt_path``, ``task``,
    ``stride`` (``[32.]`` when absent) and the ``inplace``/``recompute_scale_factor`` updates, as the target's
    ``attempt_load_one_weight``/``load_checkpoint`` leave it; fused when ``fuse``. No device move: CPU.

    ``checked``: the layer names whose objects must hold the tutorial MHSA's state (default: ``DEFAULT_LAYERS``'s);
    objects of the other mapped classes are recorded only.

    ``report``: ``{"path", "mapped": {pickled name: patched name}, "layers": [{"where", "class", "channels",
    "heads", "pos"}], "renamed": {pickled name: loaded name}, "globals": [every global the pickle named]}``.
    """
    import torch

    ckpt, report = unpickle(path, layers, checked)
    if isinstance(ckpt, torch.nn.Module):
        ckpt = {"model": ckpt}
        report["bare_module"] = True
    if not isinstance(ckpt, dict):
        raise CheckpointRefused(f"{path} is not an ultralytics checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, torch.nn.Module):
        raise CheckpointRefused(f"{path} is not an ultralytics checkpoint: no 'ema' or 'model' module in it")
    prepare(model, ckpt, path, fuse=fuse, inplace=inplace)
    return model, ckpt, report


def prepare(model, ckpt: dict, path: str | Path, *, fuse: bool = False, inplace: bool = True):
    """The target's post-``torch.load`` steps on ``model`` (in place; returns it). See :func:`load_checkpoint`."""
    import torch
    import ultralytics.nn.tasks as tasks

    defaults = getattr(tasks, "DEFAULT_CFG_DICT", None) or {}
    train_args = ckpt.get("train_args") or {}
    if not isinstance(train_args, dict):
        train_args = dict(vars(train_args))
    args = {**defaults, **train_args}
    model.float()
    if ckpt.get("modelopt") and hasattr(tasks, "restore_qat"):  # 8.4: a QAT checkpoint's fake quantisation
        tasks.restore_qat(model, ckpt["modelopt"])
    keys = getattr(tasks, "DEFAULT_CFG_KEYS", None)  # releases up to 8.3.2xx keep only the default keys
    model.args = {k: v for k, v in args.items() if k in keys} if keys is not None else args
    model.pt_path = str(path)
    task = getattr(model, "task", None) if keys is None else None  # later releases keep a stored task
    model.task = task or tasks.guess_model_task(model)
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    if fuse and hasattr(model, "fuse"):
        model.fuse()
    model.eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = inplace
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None  # torch 1.11.0 compatibility
    return model
