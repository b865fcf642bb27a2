"""The two-node test cluster itself (tests/raycluster.py): what the Ray tests of ``ablate`` stand on.

Tasks run on the worker node, which cannot see the driver's folder and has a HOME of its own; a worker node
without the cluster's token is refused. (A worker node killed mid-task, every process of it at once, and Ray's retry
on a fresh one: tests/test_ablate.py's lost-node test, on a real run.)
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

import raycluster

pytestmark = pytest.mark.slow  # a Ray cluster: about 10 s to start

DRIVER = r"""
import json, os, sys, ray
hidden_file, marks, n, sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ray.init(address="127.0.0.1:6379", log_to_driver=False)

@ray.remote(num_cpus=1, max_retries=2)
def where(hidden_file, marks, sleep):
    import os, time, ray
    node = ray.get_runtime_context().get_node_id()
    open(os.path.join(marks, f"{node}.{os.getpid()}"), "w").close()  # this attempt started, on that node
    time.sleep(sleep)
    return {"node": node, "sees": os.path.exists(hidden_file), "home": os.environ["HOME"],
            "tmp": os.environ.get("TMPDIR")}

results = ray.get([where.remote(hidden_file, marks, sleep) for _ in range(n)])
print(json.dumps({"head": ray.get_runtime_context().get_node_id(), "driver_sees": os.path.exists(hidden_file),
                  "results": results}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = raycluster.cluster_root(tmp_path_factory)
    c = raycluster.Cluster(root, hidden=root / "driver", env=dict(os.environ)).start()
    (c.hidden / "secret.txt").write_text("the driver's folder")
    try:
        yield c
    finally:
        c.stop()


def live_worker(cluster) -> raycluster.WorkerNode:
    alive = [w for w in cluster.workers if not w.killed and w.proc.poll() is None]
    return alive[0] if alive else cluster.add_worker()


def report(stdout: str) -> dict:
    """The driver's JSON line (Ray may print its own lines around it)."""
    return json.loads(next(ln for ln in reversed(stdout.splitlines()) if ln.startswith('{"head"')))


def driver(cluster, marks, n: int, sleep: float):
    marks.mkdir(exist_ok=True)
    args = [sys.executable, "-c", DRIVER, str(cluster.hidden / "secret.txt"), str(marks), str(n), str(sleep)]
    return args


def test_tasks_run_on_the_worker_node_which_cannot_see_the_drivers_folder(cluster):
    worker = live_worker(cluster)
    r = cluster.run(driver(cluster, cluster.root / "marks-a", 2, 0.0), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = report(r.stdout)
    assert out["driver_sees"] is True  # the driver runs on the head, beside the folder
    for res in out["results"]:
        assert res["node"] != out["head"]  # --num-cpus=0: nothing runs on the head
        assert res["sees"] is False  # the worker node's mount namespace hides the driver's folder
        assert res["home"] == str(worker.home) and res["tmp"] == str(worker.home.parent / "tmp")


def test_a_worker_node_without_the_token_is_refused(cluster):
    node = cluster.add_worker(token=False, wait=False)
    deadline = time.monotonic() + 120
    while "InvalidAuthToken" not in node.log.read_text(errors="replace") and node.proc.poll() is None:
        assert time.monotonic() < deadline, "the worker node neither joined nor was refused"
        time.sleep(0.1)
    text = node.log.read_text(errors="replace")
    assert "InvalidAuthToken" in text and "Ray runtime started" not in text, text[-3000:]
    cluster.kill(node)  # ray start retries a while before it gives up
