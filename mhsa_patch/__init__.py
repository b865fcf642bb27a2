"""mhsa-patch: add BoTNet's multi-head self-attention (MHSA) to an installed ultralytics, exactly and reversibly.

Packages, one concern each: ``cli`` (parse, print, exit code), ``patching`` (the edits to ultralytics' files and
their journal), ``modelyaml`` (model YAMLs: graph, rows, generation), ``child`` (code run in a child interpreter
against the target's ultralytics). The layers themselves live in the top-level ``patches/`` folder, which the wheel
installs as ``mhsa_patch.patches`` (``package-dir`` in pyproject.toml, no symlink).
"""

__version__ = "0.1.0"


def _source_checkout_patches() -> None:
    """In a source checkout (``python -m pytest`` from the clone), map the top-level ``patches/`` as the wheel does."""
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if "mhsa_patch.patches" in sys.modules or os.path.isdir(os.path.join(here, "patches")):
        return
    src = os.path.join(os.path.dirname(here), "patches")
    init = os.path.join(src, "__init__.py")
    if not (os.path.isfile(init) and os.path.isfile(os.path.join(os.path.dirname(here), "pyproject.toml"))):
        return  # an installed copy: the wheel's own mhsa_patch/patches (or an editable install's finder) serves it
    spec = importlib.util.spec_from_file_location("mhsa_patch.patches", init, submodule_search_locations=[src])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_source_checkout_patches()
