import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import releases  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _offline_ultralytics(tmp_path_factory):
    """Ultralytics writes a settings file on first import and tries the network otherwise."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(tmp_path_factory.mktemp("yolo-config"))
    yield


@pytest.fixture
def latest_pkg(tmp_path) -> Path:
    """A fresh copy of the latest release's ultralytics/ package under tmp_path/site."""
    return releases.copy_release(releases.LATEST, tmp_path / "site")
