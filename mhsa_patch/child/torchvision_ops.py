"""A torchvision built for another torch, said in one line with the command that fixes it, in every child.

torchvision's operators (``nms``, ``roi_align`` ...) are compiled against one torch build. Installed from another
index than torch (torch from PyTorch's CPU index, torchvision from PyPI, built for the CUDA torch), its library does
not load, and the first ``import torchvision`` fails deep inside torch with ``RuntimeError: operator torchvision::nms
does not exist`` (older torchvision imports, then fails at the first ``nms``). Ultralytics imports torchvision when
it is imported (8.0.98) or only when it validates (8.4): a user would meet it after a training epoch.

:func:`install` (run first in every child, with the offline guard, by the boot line of ``child/env.py``) makes the
first import of torchvision in the child run one ``torchvision.ops.nms`` on two boxes, torchvision's public API, and
turns a failure of either into a :class:`ChildError` naming both versions and the fix. Children that will validate
(``check --train``, ``ablate``'s runs) call :func:`require` at start-up, so they stop before training.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys

from mhsa_patch.child.importhook import WrappedLoader, WrappingFinder
from mhsa_patch.child.protocol import ChildError, one_line

_installed = False


def fix_command(torch_version: str) -> str:
    """The pip command that puts in the torchvision built for this torch, from the index this torch came from:
    ``2.14.1+cpu`` from PyTorch's CPU index, ``2.14.1+cu130`` from its cu130 index, ``2.14.1`` (no local label) from
    PyPI. torch itself is kept: ``torch==`` its version (the local label dropped) is already satisfied."""
    public, _, local = torch_version.partition("+")
    pytorch_index = re.fullmatch(r"cpu|cu\d+|rocm[\d.]+|xpu", local)  # not a source build's "git1234"
    index = f" --index-url https://download.pytorch.org/whl/{local}" if pytorch_index else ""
    return f"pip uninstall -y torchvision && pip install torchvision torch=={public}{index}"


def mismatch(error: BaseException) -> ChildError:
    """The one line for a torchvision whose operators did not load (``error``: what torch or torchvision raised)."""
    try:
        import torch

        torch_version = str(torch.__version__)
    except Exception:  # noqa: BLE001 - a torch that does not import says so itself; name the wheel
        torch_version = _dist_version("torch")
    return ChildError(
        f"torchvision {_dist_version('torchvision')} was built for another torch than {torch_version}: its compiled "
        f"operators do not load ({one_line(error)}). Install the torchvision built for this torch, from the same "
        f"index: {fix_command(torch_version)}"
    )


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _nms_runs(torchvision) -> None:
    import torch

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)


def require() -> None:
    """Import torchvision (when installed) now and check that its operators run; a :class:`ChildError` otherwise."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision

        _nms_runs(torchvision)
    except ChildError:  # the loader below said it
        raise
    except Exception as e:  # noqa: BLE001 - torch's RuntimeError, an OSError from the loader ...
        raise mismatch(e) from None


class _Loader(WrappedLoader):
    def exec_module(self, module):
        try:
            self.inner.exec_module(module)
            _nms_runs(module)
        except ChildError:
            raise
        except Exception as e:  # noqa: BLE001 - torch's RuntimeError, an OSError from the loader ...
            raise mismatch(e) from None


def install() -> None:
    """Check torchvision's operators at its first import in this process; call before anything imports it."""
    global _installed
    if _installed or "torchvision" in sys.modules:
        return
    _installed = True
    sys.meta_path.insert(0, WrappingFinder(lambda name: name == "torchvision", _Loader))
