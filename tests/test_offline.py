"""Issue 9 D, issue 22 A.10: every child of the tool stays off the network: gen-yaml --check and port-weights here;
check and check --train in test_check.py (on the latest release and on 8.0.98), ablate (whose children train,
validate and measure) in test_ablate.py, each on a run those files read anyway.

Each run goes through ``netguard.run``: every connect and name lookup, in the tool and in each process it starts, is
recorded and refused; the record must stay empty and every child must have been started with YOLO_OFFLINE=1 by the
tool itself (the test sets none).
"""

from __future__ import annotations

import pytest

import netguard
import trainkit

pytestmark = pytest.mark.training


def test_gen_yaml_check_and_port_weights_stay_offline(tmp_path):
    kit = trainkit.patched()
    out = tmp_path / "yaml"
    out.mkdir()
    netguard.assert_offline(netguard.run("gen-yaml", "--scale", "n", "--check", "--target", str(kit["site"]),
                                         site=kit["site"], cwd=out))
    netguard.assert_offline(netguard.run("port-weights", str(kit["stock"]), str(kit["yaml"]), "-o",
                                         str(tmp_path / "ported.pt"), "--target", str(kit["site"]), site=kit["site"]))
