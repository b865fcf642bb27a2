"""Keep a child process off the network, on every supported ultralytics release (8.0.98 to 8.4.x).

``YOLO_OFFLINE=1`` (set by :func:`mhsa_patch.child.env.target_env`) is not enough: releases before it existed
probe DNS servers when ``ultralytics.utils`` is imported (``ONLINE = is_online()``), ask PyPI for a newer version
when training starts (``check_pip_update_available``), and ``check_font`` downloads ``Arial.ttf`` when the font is
not in the settings folder. :func:`install` runs first in every child (the boot line of ``child/env.py``):

* every ``ultralytics`` module, once executed, has ``is_online``/``ONLINE``, ``check_font``,
  ``check_pip_update_available`` and ``check_latest_pypi_version`` replaced by offline versions (also where a
  module imported them by name), and the in-memory ``SETTINGS['sync']`` set to False (the settings file is left
  alone), which turns off analytics events;
* a socket guard refuses any connection or name lookup from the child with ``OSError``, as an offline machine
  would, so a path nobody thought of fails fast instead of reaching the network. The connectivity probe that old
  releases run while ``ultralytics`` is imported is answered this way; any other attempt is also appended to the
  file named by ``MHSA_PATCH_NETLOG`` when set (the tests assert it stays empty).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

from mhsa_patch.child.importhook import WrappedLoader, WrappingFinder

NETLOG = "MHSA_PATCH_NETLOG"
_quiet = 0  # > 0 while ultralytics' own import runs: its connectivity probe is expected
_installed = False


def _blocked(what: str, *args, **kwargs):
    if not _quiet and os.environ.get(NETLOG):
        with contextlib.suppress(OSError), open(os.environ[NETLOG], "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {what}{args!r}\n")
    raise OSError(f"mhsa-patch: network access is disabled in this process ({what})")


def _guard_sockets() -> None:
    def connect(self, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _blocked("socket.connect", *args)
        return _connect(self, *args, **kwargs)

    def connect_ex(self, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _blocked("socket.connect_ex", *args)
        return _connect_ex(self, *args, **kwargs)

    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = lambda *a, **k: _blocked("socket.create_connection", *a)
    socket.getaddrinfo = lambda *a, **k: _blocked("socket.getaddrinfo", *a)
    socket.gethostbyname = lambda *a, **k: _blocked("socket.gethostbyname", *a)
    socket.gethostbyname_ex = lambda *a, **k: _blocked("socket.gethostbyname_ex", *a)


def local_font(font: str = "Arial.ttf") -> Path:
    """A font file on this machine (matplotlib's DejaVu Sans), in place of ultralytics' downloaded Arial."""
    with contextlib.suppress(Exception):
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return Path(font)  # callers fall back to PIL's default font when it does not open


def _offline_is_online() -> bool:
    return False


def _no_update(*args, **kwargs) -> bool:
    return False


def _no_version(*args, **kwargs):
    return None


def _offline_font(font: str = "Arial.ttf", *args, **kwargs) -> Path:
    return local_font(font)


REPLACEMENTS = {
    "is_online": _offline_is_online,
    "check_font": _offline_font,
    "check_pip_update_available": _no_update,
    "check_latest_pypi_version": _no_version,
}


def neutralise(module) -> None:
    """Replace ultralytics' network helpers in ``module`` (any ultralytics module, after it ran)."""
    ns = vars(module)
    for name, fn in REPLACEMENTS.items():
        if callable(ns.get(name)):
            ns[name] = fn
    if ns.get("ONLINE") is True:
        ns["ONLINE"] = False
    settings = ns.get("SETTINGS")
    if isinstance(settings, dict) and settings.get("sync"):
        dict.__setitem__(settings, "sync", False)  # in memory only: dict's own setter does not save the file
    events = ns.get("events")
    if events is not None and hasattr(events, "enabled"):
        with contextlib.suppress(Exception):
            events.enabled = False


class _Loader(WrappedLoader):
    def exec_module(self, module):
        global _quiet
        _quiet += 1
        try:
            self.inner.exec_module(module)
        finally:
            _quiet -= 1
        neutralise(module)


def _is_ultralytics(name: str) -> bool:
    return name == "ultralytics" or name.startswith("ultralytics.")


def install() -> None:
    """Make this process offline for real; call before anything imports ultralytics."""
    global _installed
    if _installed:
        return
    _installed = True
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    _guard_sockets()
    sys.meta_path.insert(0, WrappingFinder(_is_ultralytics, _Loader))
    for name, module in list(sys.modules.items()):  # already imported (not the case when started by env.py)
        if _is_ultralytics(name):
            neutralise(module)
