"""``mhsa-patch check`` and ``check --train`` against a patched copy of a real release; refusals are one line."""

from __future__ import annotations

import pytest

import netguard
import releases
import trainkit
from helpers import ROOT, assert_refused, fork_bot3_yaml


@pytest.mark.training
def test_check_with_training_run():
    """The whole path on the CPU: build, forward 640x640 and 640x480, backward + step, summary, latency, then
    ultralytics' trainer on the synthetic set, finite losses, last.pt and best.pt reloaded and predicting."""
    guarded = trainkit.check_train_guarded()  # one run, shared with the docs' example (the next test)
    netguard.assert_offline(guarded)  # the tool and its child (the checks, then the training run): no connect, no
    # lookup, the child started with YOLO_OFFLINE=1 by the tool
    text = guarded.proc.stdout
    for needle in (
        "✔ Building yolov8n-MHSA.yaml",
        "✔ Forward at 640x640",
        "✔ Forward at 640x480 (rectangular)",
        "✔ Backward and one optimizer step at 640x640",
        "Training 1 epoch with ultralytics' trainer on the CPU",
        "epoch 1/1: box_loss ",  # one line per epoch from the child's events; ultralytics' own log needs --verbose
        "YOLOv8n-MHSA summary: 24 layers",
        "ultralytics.nn.modules.conv.MHSA",
        "GFLOPs at 640x640 (true, attention included",
        "baseline: yolov8n.yaml (nc=80): 23 layers, 3,157,200 parameters",
        "MHSA added: +197,376 parameters (+6.3%)",
        "CPU latency at 640x640",
        "Training run: 4 iterations, finite losses",
        "reloaded and predicted: last.pt",
        "best.pt",
        "check passed ✅ (with a training run)",
    ):
        assert needle in text, f"{needle!r} not in:\n{text[-5000:]}"
    # its time ("well under 2 minutes on 2 cores") is measured by examples/bench_check.py, not asserted here


@pytest.mark.training
def test_check_summary_example_is_real():
    """docs/check.md's ``check-summary`` example is this run's output (test_docs_examples.py has the others; this
    one lives here, on the worker that makes the run for the test above)."""
    from test_docs_examples import NUMBER, check_example, check_summary

    proc = trainkit.check_train_run()
    assert proc.returncode == 0, proc.stdout[-6000:]
    report_rows = [ln for ln in proc.stdout.split("\n") if "ultralytics.nn.modules.conv.MHSA" in ln]
    added = {int(ln.split()[0]) for ln in report_rows}
    assert added, proc.stdout[-4000:]
    real = check_summary(proc.stdout, added)
    check_example(ROOT / "docs" / "check.md", "check-summary", real,
                  lambda doc, real: NUMBER.sub("#", doc) == NUMBER.sub("#", real))


@pytest.mark.training
def test_check_json_on_a_checkpoint():
    """A .pt (here the ported yolov8n) is checked as well; the JSON report carries the numbers."""
    p = trainkit.patched()
    r = trainkit.json_report(trainkit.cli("check", str(trainkit.ported()), "--json", "--imgsz", "320", "--runs", "2",
                                          "--target", str(p["site"]), site=p["site"]))
    assert r["source"] == "checkpoint" and r["ultralytics"] == releases.LATEST
    assert [m["index"] for m in r["added_layers"]] == [10] and r["scale"] == "n"
    assert [f["input"] for f in r["forward"]] == [[1, 3, 320, 320], [1, 3, 224, 320]]
    assert [f["output"] for f in r["forward"]] == [[1, 84, 2100], [1, 84, 1470]]
    s, st = r["summary"], r["stock"]
    assert (r["baseline"], st["changes"], st["parameters"]) == ("yolov8n.yaml", "MHSA added", 3157200)
    mhsa_params = s["layers"][10]["params"]
    assert mhsa_params == 3 * (256 * 256 + 256)
    assert s["parameters"] - st["parameters"] == mhsa_params
    # true GFLOPs: the MHSA layer costs its projections and its attention, which ultralytics' own count misses
    assert s["gflops"] > st["gflops"] and s["layers"][10]["gflops"] > 0
    assert r["latency"]["ratio"] > 0 and r["latency"]["runs"] == 2
    assert r["train_step"]["added_grad_norm"] > 0 and r["train_step"]["added_updated"]
    assert "train" not in r


@pytest.mark.training
def test_baseline_is_the_releases_own_config(tmp_path):
    """Real builds of three shapes against the release's yolov8n.yaml at the same nc: a fork's yolov8-BoT3.yaml (nc 3,
    BoT3 added after SPPF, no scale in its name), gen-yaml's BoT3 in place of C2f, MHSA added; then a user's own head,
    compared with its YAML without BoT3. The JSON carries the baseline's name; the text says it in plain words."""
    p = trainkit.patched()
    fork = tmp_path / "yolov8-BoT3.yaml"
    fork.write_text(fork_bot3_yaml(p["yaml"].read_text()))
    bot3 = trainkit.gen_yaml(p["site"], tmp_path / "bot3", "n", "--layer", "BoT3")

    def check(cfg, *extra):
        return trainkit.cli("check", str(cfg), *extra, "--imgsz", "256", "--runs", "1", "--target", str(p["site"]),
                            site=p["site"])

    # the text lines are the JSON's fields in words (cli/verify.py's _print_check); the fork is read as JSON, the
    # others as text (test_check_with_training_run and test_check_json_on_a_checkpoint read MHSA's both ways)
    r = trainkit.json_report(check(fork, "--json"))
    assert r["baseline"] == "yolov8n.yaml" and r["stock"]["config"] == "cfg/models/v8/yolov8.yaml"
    assert (r["stock"]["nc"], r["stock"]["layers"], r["stock"]["parameters"]) == (3, 23, 3011433)
    assert r["summary"]["parameters"] - r["stock"]["parameters"] == r["summary"]["layers"][10]["params"] == 198272
    assert r["stock"]["changes"] == "BoT3 added"

    proc = trainkit.ok(check(bot3))
    assert "baseline: yolov8n.yaml (nc=80): 23 layers, 3,157,200 parameters," in proc.stdout
    assert "BoT3 in place of C2f: −262,016 parameters (−8.3%), −" in proc.stdout

    custom = tmp_path / "yolov8-bifpn-BoT3.yaml"  # the head's first C2f repeated twice: no stock config has that
    custom.write_text(fork.read_text().replace("[-1, 3, C2f, [512]] # 13", "[-1, 6, C2f, [512]] # 13", 1))
    assert custom.read_text() != fork.read_text()
    proc = trainkit.ok(check(custom))
    assert "yolov8-bifpn-BoT3.yaml's other rows match no stock config" in proc.stderr
    assert "baseline: yolov8-bifpn-BoT3.yaml without BoT3 (nc=3): 23 layers," in proc.stdout
    assert "BoT3 added: +198,272 parameters" in proc.stdout


@pytest.mark.training
def test_refuses_an_unpatched_target():
    p = trainkit.patched()
    site = trainkit.unpatched()
    proc = trainkit.cli("check", str(p["yaml"]), "--target", str(site), site=site)
    assert_refused(proc, "not patched", "status: not-applied", "mhsa-patch apply")


@pytest.mark.training
def test_refuses_a_model_that_does_not_build(tmp_path):
    p = trainkit.patched()
    bad = tmp_path / "yolov8n-MHSA.yaml"
    bad.write_text(p["yaml"].read_text().replace("MHSA, [14, 14, 4]", "MHSA, [14, 14, 3]"))
    assert bad.read_text() != p["yaml"].read_text()
    proc = trainkit.cli("check", str(bad), "--target", str(p["site"]), site=p["site"])
    assert_refused(proc, "the model does not build", "divisible by heads=3")


def test_refuses_bad_input(tmp_path):
    """Parent-side refusals: no child process, fast."""
    site = releases.copy_release(releases.LATEST, tmp_path / "site").parent
    assert_refused(trainkit.cli("check", str(tmp_path / "none.yaml"), "--target", str(site), site=site),
                    "no such model file")
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    assert_refused(trainkit.cli("check", str(txt), "--target", str(site), site=site), "expected a model .yaml")
    assert_refused(trainkit.cli("check", str(txt), "--target", str(tmp_path / "nowhere"), site=site),
                    "no such file or directory")
    assert_refused(trainkit.cli("check", str(txt), "--imgsz", "48", "--target", str(site), site=site),
                   "usage: ", "--imgsz", code=2)
    y = tmp_path / "yolov8n-x.yaml"
    y.write_text("nc: 1\n")
    assert_refused(trainkit.cli("check", str(y), "--imgsz", "100", "--target", str(site), site=site),
                   "usage: ", "multiple of 32", code=2)


@pytest.mark.training
def test_refuses_a_yaml_that_is_not_a_model(tmp_path):
    p = trainkit.patched()
    y = tmp_path / "yolov8n-x.yaml"
    y.write_text("nc: 1\n")
    assert_refused(trainkit.cli("check", str(y), "--target", str(p["site"]), site=p["site"]), "not a model YAML")


@pytest.mark.training
@pytest.mark.releases
def test_check_on_the_first_supported_release():
    """8.0.98: the loss still lived in the trainer, the config in ultralytics.yolo.cfg; check copes, and stays
    offline although the release probes DNS at import, checks PyPI and fetches a font when training starts. The
    ``check --train --json`` run on it is made once, under the network guard, and shared with the next test."""
    run = trainkit.old_release_check_train("8.0.98")
    netguard.assert_offline(run)
    r = trainkit.json_report(run.proc)
    assert r["ultralytics"] == "8.0.98" and [m["index"] for m in r["added_layers"]] == [10]
    assert r["stock"]["parameters"] == 3157200 and r["summary"]["parameters"] > r["stock"]["parameters"]
    assert r["train_step"]["added_grad_norm"] > 0


@pytest.mark.training
@pytest.mark.releases
@pytest.mark.parametrize("version", ["8.0.98", "8.1.30"])
def test_check_train_on_old_releases_with_todays_torch(version):
    """Releases up to 8.2.x call torch.load without weights_only, which torch >= 2.6 refuses: ultralytics' trainer
    stopped at reloading last.pt. The child routes the release's own loading through the restricted loader, so
    --train passes with no unsafe switch set (the suite sets none: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is absent).
    The run is made once, under the network guard (8.0.98's shared with the test above)."""
    import importlib.metadata

    from mhsa_patch.patching.target import version_tuple

    assert version_tuple(importlib.metadata.version("torch"))[:2] >= (2, 6)  # the wall is there to hit
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in trainkit.env(trainkit.patched_release(version)["site"])
    proc = trainkit.old_release_check_train(version).proc
    r = trainkit.json_report(proc)
    assert r["ultralytics"] == version and r["restricted_loading"] is True
    assert set(r["train"]["reloaded"]) == {"last.pt", "best.pt"}
    assert all(v["added_layers"] for v in r["train"]["reloaded"].values())
    # the user's own 'yolo train' outside the tool hits the wall: check says so in one line, and what fixes it
    assert "torch<2.6 with this release, or ultralytics>=8.2.103" in proc.stderr
    assert r["torch_load_note"].startswith(f"ultralytics {version} calls torch.load without weights_only")


@pytest.mark.training
def test_check_a_segmentation_model(tmp_path):
    """Other tasks build, run and get gradients through MHSA (a surrogate loss: no masks here); --train is refused."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "seg", "n", "--task", "segment")
    r = trainkit.json_report(trainkit.cli("check", str(cfg), "--json", "--imgsz", "256", "--runs", "1",
                                          "--target", str(p["site"]), site=p["site"]))
    assert r["task"] == "segment" and [m["index"] for m in r["added_layers"]] == [10]
    assert r["train_step"]["loss_kind"].startswith("surrogate") and r["train_step"]["added_grad_norm"] > 0
    proc = trainkit.cli("check", str(cfg), "--train", "--target", str(p["site"]), site=p["site"])
    assert_refused(proc, "check --train draws a detection dataset", "segment model")


@pytest.mark.training
def test_check_a_bot3_model(tmp_path):
    """gen-yaml --layer BoT3: BoT3 in place of layer 8's C2f; it builds, runs, every parameter learns (its unused fc1
    is buffers), and the stock model it is compared with is the real yolov8n."""
    p = trainkit.patched()
    cfg = trainkit.gen_yaml(p["site"], tmp_path / "bot3", "n", "--layer", "BoT3")
    assert cfg.name == "yolov8n-BoT3.yaml"
    r = trainkit.json_report(trainkit.cli("check", str(cfg), "--json", "--imgsz", "256", "--runs", "1",
                                          "--target", str(p["site"]), site=p["site"]))
    assert r["added_layers"] == [{"index": 8, "type": "BoT3"}]
    assert r["stock"]["parameters"] == 3157200 and r["stock"]["layers"] == r["summary"]["layers"].__len__()
    assert r["train_step"]["added_grad_norm"] > 0 and r["train_step"]["added_updated"]
    # a BoT3 checkpoint (the stock yolov8n ported into it) goes through the restricted loader too: its MHSA objects
    # are checked against the tutorial's state, BoT3 and its bottlenecks are only mapped
    out = tmp_path / "yolov8n-BoT3.pt"
    trainkit.ok(trainkit.cli("port-weights", str(p["stock"]), str(cfg), "-o", str(out), "--target", str(p["site"]),
                             site=p["site"]))
    r = trainkit.json_report(trainkit.cli("check", str(out), "--json", "--imgsz", "256", "--runs", "1",
                                          "--target", str(p["site"]), site=p["site"]))
    assert r["source"] == "checkpoint" and r["added_layers"] == [{"index": 8, "type": "BoT3"}]
