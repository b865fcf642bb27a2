"""``ablate``'s option parsing, devices, the recipe and the grid's order, without training (fast)."""

from __future__ import annotations

import pytest

from mhsa_patch.ablate.backends import slot_device, slot_env, slot_label
from mhsa_patch.ablate.ray_backend import RETRIES, Connection, RayLines, task_options
from mhsa_patch.ablate.recipe import first_difference, parse_extra
from mhsa_patch.ablate.runner import Experiment, Run, check_options, order, parse_device, parse_seeds, run_spec
from mhsa_patch.ablate.variants import _slug
from mhsa_patch.cli.ablate import optional_ray_address
from mhsa_patch.errors import PatchError, UsageError


def test_seeds_devices_and_folder_names():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,5,7") == [0, 5, 7]
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(PatchError):
            parse_seeds(bad)
    assert parse_device("cpu") == ["cpu"] and parse_device("0,1,2,3") == ["0", "1", "2", "3"]
    with pytest.raises(PatchError):
        parse_device("0,0")
    assert [_slug(v) for v in ("MHSA@P3+P4+P5", "stock:s", "yaml:cfg/my model.yaml", "BoT3")] == [
        "MHSA-P3-P4-P5", "stock-s", "yaml-my-model", "BoT3"
    ]


def test_extra_arguments_read_as_ultralytics_reads_them():
    assert parse_extra(["lr0=0.005", "mosaic=0.5", "cos_lr=True", "optimizer=SGD", "fraction=1", "cache=None"]) == {
        "lr0": 0.005, "mosaic": 0.5, "cos_lr": True, "optimizer": "SGD", "fraction": 1, "cache": None
    }
    for bad, msg in (("epochs=3", "use --epochs"), ("seed=1", "use --seeds"), ("lr0", "expected key=value"),
                     ("deterministic=False", "the command sets it")):  # fmt: skip
        with pytest.raises(PatchError, match=msg):
            parse_extra([bad])


def test_the_first_differing_key_is_named():
    old = {"data": "d", "epochs": 2, "extra": {"lr0": 0.01}, "train": {"epochs": 2, "lr0": 0.01}, "torch": "2.4"}
    assert first_difference(old, dict(old)) is None
    assert first_difference(old, {**old, "epochs": 3}) == ("epochs", 2, 3)
    assert first_difference(old, {**old, "extra": {"lr0": 0.01, "mosaic": 0.5}}) == ("extra.mosaic", "<unset>", 0.5)
    assert first_difference(old, {**old, "torch": "2.5"}) == ("torch", "2.4", "2.5")
    assert first_difference(old, {**old, "device": "0,1"}) is None  # where runs go is not the recipe


def test_ray_without_an_address_means_auto():
    assert optional_ray_address(["ablate", "--ray"]) == ["ablate", "--ray", "auto"]
    assert optional_ray_address(["ablate", "--ray", "--quiet", "--", "x=1"]) == ["ablate", "--ray", "auto", "--quiet",
                                                                                "--", "x=1"]  # fmt: skip
    assert optional_ray_address(["ablate", "--ray", "head:6379"]) == ["ablate", "--ray", "head:6379"]
    assert optional_ray_address(["check", "--ray"]) == ["check", "--ray"]


# -- usage errors: the class and exit code 2 (issue 22 A.4) -----------------------------------------------------------


BAD_OPTIONS = (
    (["--device", "0,0"], "--device 0,0: cpu, a GPU index"),
    (["--device", "gpu"], "--device gpu: cpu, a GPU index"),
    (["--imgsz", "50"], "--imgsz 50: must be a multiple of 32"),
    (["--data", "synthetic:1"], "--data synthetic:1: at least 2 training images"),
    (["--data", "synthetic:x"], "--data synthetic:x: expected synthetic or synthetic:N"),
    (["--epochs", "0"], "--epochs"),
    (["--batch", "0"], "--batch"),
)


@pytest.mark.parametrize("bad,needle", BAD_OPTIONS, ids=[" ".join(b) for b, _ in BAD_OPTIONS])
def test_bad_option_values_are_usage_errors_exit_2(bad, needle, tmp_path):
    """Through the CLI (exit 2, one ``usage:`` line, nothing written), and the exception's class itself: a
    ``pytest.raises(PatchError)`` would also pass for a refusal (exit 1)."""
    import releases
    from helpers import assert_refused, cli

    site = releases.pristine(releases.LATEST).parent  # read only: the options are refused before the target is used
    args = {"--data": "synthetic:4", "--epochs": "1", "--batch": "2", "--imgsz": "64", "--device": "cpu"}
    for k in range(0, len(bad), 2):
        args[bad[k]] = bad[k + 1]
    r = cli("ablate", "--target", str(site), "--project", str(tmp_path), "--name", "u", *[x for kv in args.items() for x in kv])
    assert_refused(r, "usage:", needle, code=2)
    assert not (tmp_path / "u").exists()
    with pytest.raises(PatchError) as e:
        check_options(data=args["--data"], seeds="1", epochs=int(args["--epochs"]), imgsz=int(args["--imgsz"]),
                      batch=int(args["--batch"]), device=args["--device"], extra=[])  # fmt: skip
    assert type(e.value) is UsageError, type(e.value)


# -- devices (issue 22 A.6) -------------------------------------------------------------------------------------------


def test_parse_device_gives_one_slot_per_gpu():
    assert parse_device("cpu") == ["cpu"] and parse_device("MPS") == ["mps"]
    assert parse_device("0") == ["0"] and parse_device(" 1, 3 ") == ["1", "3"] and parse_device("0,1,2,3") == list("0123")
    for bad in ("0,0", "gpu", "", "-1", "0,,1", "cuda:0", "1.5"):
        with pytest.raises(UsageError):
            parse_device(bad)


def test_each_slot_sees_its_one_gpu_as_device_0():
    """A run's child gets ``CUDA_VISIBLE_DEVICES`` = its GPU, as the driver's own ``CUDA_VISIBLE_DEVICES`` numbers it
    (``--device 1`` under ``CUDA_VISIBLE_DEVICES=4,5,6`` is physical GPU 5), and trains on ``device=0``."""
    assert slot_env("cpu") == {} and slot_env("mps") == {}
    assert slot_env("2", visible="") == {"CUDA_VISIBLE_DEVICES": "2"}
    assert slot_env("1", visible="4,5,6") == {"CUDA_VISIBLE_DEVICES": "5"}
    assert slot_env("0", visible=" 7 ") == {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(PatchError, match="shows 3 GPU"):
        slot_env("3", visible="4,5,6")
    assert [slot_device(s) for s in ("cpu", "mps", "0", "3")] == ["cpu", "mps", "0", "0"]
    assert [slot_label(s) for s in ("cpu", "3")] == ["cpu", "cuda:3"]


def test_ray_asks_for_each_runs_own_gpu_and_cpus_and_retries_a_lost_node():
    """A run's task asks for its GPU (none with --device cpu) and its dataloader workers plus one CPU, whatever the
    driver has; Ray retries it after a lost node or process (each retry resumes from the newest snapshot), never after
    an error of the run itself."""
    retry = {"max_retries": RETRIES, "retry_exceptions": False}
    assert RETRIES >= 1
    assert task_options("0", {"workers": 2}) == {"num_gpus": 1, "num_cpus": 3, **retry}
    assert task_options("cpu", {"workers": 0}) == {"num_gpus": 0, "num_cpus": 1, **retry}
    assert task_options("0", {}) == {"num_gpus": 1, "num_cpus": 9, **retry}  # ultralytics' 8 workers


def test_rays_own_lines_go_to_the_log_those_its_shutdown_flushes_too(tmp_path, capsys):
    """Ray's driver prints from its listener threads, and ``ray.shutdown()`` prints what its deduplicator still holds
    (a lost node's repeated ``(raylet) Raylet is terminated``) from the thread that calls it (Ray 2.60,
    ``worker.disconnect``). Both go to ``logs/ray.log``; the command's own lines, and any write after, stay on the
    output. The shutdown here stands in for Ray's: the real flush needs a node lost twice within Ray's window, which
    the two-node test in test_ablate.py meets only sometimes."""
    import sys
    import threading
    import types

    lines = RayLines()
    lines.install()
    fake = types.SimpleNamespace(is_initialized=lambda: True, shutdown=lambda: print("(raylet) flushed at shutdown"))
    conn = Connection(fake, "local", True, lines)
    try:
        t = threading.Thread(target=lambda: print("(raylet) from the listener"), name="ray_listen_error_messages")
        t.start()
        t.join()
        print("mhsa-patch: our own line")
        conn.log_to(tmp_path / "logs" / "ray.log")
    finally:
        conn.close()
    print("after close")
    out = capsys.readouterr().out
    assert out == "mhsa-patch: our own line\nafter close\n"
    assert (tmp_path / "logs" / "ray.log").read_text() == "(raylet) from the listener\n(raylet) flushed at shutdown\n"
    assert lines.saved is None and lines.whole_thread is None  # unwrapped, and nothing left capturing


def test_the_scheduler_keeps_as_many_ray_runs_going_as_the_live_nodes_hold():
    from mhsa_patch.ablate.cluster.resources import run_resources, runs_at_once

    head = {"Alive": True, "Resources": {"memory": 1e9}}  # ray start --head --num-cpus=0: holds none
    gpu2 = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}}
    cpu8 = {"Alive": True, "Resources": {"CPU": 8.0}}
    dead = {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}
    assert runs_at_once(run_resources("0", {"workers": 3}), [head, gpu2, cpu8, dead]) == 2  # the GPUs bound it
    assert runs_at_once(run_resources("0", {"workers": 9}), [head, gpu2]) == 1  # 10 CPUs each: one fits in 16
    assert runs_at_once(run_resources("cpu", {"workers": 1}), [head, gpu2, cpu8, dead]) == 12
    assert runs_at_once(run_resources("cpu", {}), [head, dead]) == 1  # never 0: the scheduler always submits one


# -- the recipe's patience, the grid's order ---------------------------------------------------------------------------


def test_by_default_no_run_stops_early_and_patience_is_recorded(tmp_path):
    from mhsa_patch.ablate.recipe import check_recipe, train_args, write_recipe

    args = train_args(data="d.yaml", epochs=300, imgsz=640, batch=16, project=tmp_path, extra={})
    assert args["patience"] == 300
    assert train_args(data="d.yaml", epochs=300, imgsz=640, batch=16, project=tmp_path,
                      extra=parse_extra(["patience=20"]))["patience"] == 20  # fmt: skip
    # an experiment begun before the recipe held patience is the same experiment (its runs now get it on resume)
    old = {"data": "d", "epochs": 300, "extra": {}, "train": {k: v for k, v in args.items() if k != "patience"}}
    write_recipe(tmp_path, old)
    assert check_recipe(tmp_path, {**old, "train": args}) is True
    write_recipe(tmp_path, {**old, "train": args})  # one that holds it: another patience is another recipe
    with pytest.raises(PatchError, match="train.patience is 300 there, 20 here"):
        check_recipe(tmp_path, {**old, "train": {**args, "patience": 20}})


def test_a_resume_on_another_patch_or_other_data_is_refused_and_an_older_recipe_is_resumed(tmp_path):
    """``patch`` and ``data_sha256`` are compared as the releases are: a run resumed on another patch or relabelled
    data would not train what the runs before it trained. A recipe written before they were recorded lacks them."""
    from mhsa_patch.ablate.recipe import check_recipe, write_recipe

    patch = {"nn/modules/conv.py": "a" * 64, "nn/tasks.py": "b" * 64}
    rec = {"data": "synthetic:4", "epochs": 2, "train": {"epochs": 2, "patience": 2}, "patch": patch,
           "data_sha256": "c" * 64}
    write_recipe(tmp_path, rec)
    assert check_recipe(tmp_path, dict(rec, device="Ray GPU", device_name="NVIDIA H100")) is True
    with pytest.raises(PatchError) as e:
        check_recipe(tmp_path, dict(rec, patch=dict(patch, **{"nn/tasks.py": "d" * 64})))
    assert str(e.value) == (
        f"{tmp_path} was started on another patch of ultralytics: the patched nn/tasks.py has sha256 bbbbbbbbbbbb "
        "there, dddddddddddd here (another mhsa-patch release, or a layer applied or reverted since); apply it as it "
        "was to resume; pass --name for a new experiment"
    )
    with pytest.raises(PatchError, match="the patched nn/modules/__init__.py has sha256 none there"):
        check_recipe(tmp_path, dict(rec, patch=dict(patch, **{"nn/modules/__init__.py": "e" * 64})))
    with pytest.raises(PatchError) as e:
        check_recipe(tmp_path, dict(rec, data_sha256="f" * 64))
    assert str(e.value) == (
        f"{tmp_path} was started on other data: synthetic:4 has other label files or image lists now (sha256 "
        "cccccccccccc there, ffffffffffff here); put them back as they were to resume; pass --name for a new experiment"
    )
    older = {k: v for k, v in rec.items() if k not in ("patch", "data_sha256")}
    write_recipe(tmp_path, older)
    assert check_recipe(tmp_path, dict(rec, data_sha256="f" * 64)) is True


def _experiment(tmp_path, variants: dict[str, float], seeds: list[int]) -> Experiment:
    runs = [Run(v, v, s, f"{v}.yaml") for v in variants for s in seeds]
    measured = {v: {"params": 1, "gflops": g, "latency_ms": 1.0} for v, g in variants.items()}
    return Experiment(tmp_path, None, [], seeds, None, {}, runs, measured, ["cpu"])


def test_runs_start_seed_major_the_longest_variant_first(tmp_path):
    e = _experiment(tmp_path, {"stock": 8.7, "MHSA": 9.1, "BoT3": 8.2, "stock:s": 28.6}, [0, 1, 2])
    got = [(r.variant, r.seed) for r in order(e, e.runs)]
    assert got == [(v, s) for s in (0, 1, 2) for v in ("stock:s", "MHSA", "stock", "BoT3")]
    # a rerun's pending runs keep that order; records keep the plan's (variants as given, then seeds)
    pending = [r for r in e.runs if (r.variant, r.seed) not in {("MHSA", 0), ("stock:s", 1)}]
    assert [(r.variant, r.seed) for r in order(e, pending)][:4] == [("stock:s", 0), ("stock", 0), ("BoT3", 0),
                                                                     ("MHSA", 1)]  # fmt: skip
    assert [r.variant for r in e.runs][:3] == ["stock", "stock", "stock"]


def test_a_run_gets_its_device_in_its_spec(tmp_path):
    e = _experiment(tmp_path, {"stock": 1.0}, [0])
    e.recipe = {"train": {"epochs": 2, "device": "ignored"}, "val": {"imgsz": 64}}
    spec = run_spec(e, e.runs[0], "3")
    assert spec["train"]["device"] == "0" and spec["val"]["device"] == "0" and spec["device"] == "cuda:3"
    assert spec["run"] == "stock-s0" and spec["train"]["seed"] == 0 and spec["train"]["name"] == "stock-s0"
    assert run_spec(e, e.runs[0], "cpu")["train"]["device"] == "cpu"
def test_validator_arguments_and_the_split_reach_the_final_validation():
    from mhsa_patch.ablate.recipe import VAL_KEYS, val_args

    extra = parse_extra(["lr0=0.005", "mosaic=0", "iou=0.6", "conf=0.01", "max_det=1", "rect=True", "workers=0"])
    val = val_args(data="d.yaml", imgsz=64, batch=2, extra=extra, split="test")
    assert val == {"data": "d.yaml", "imgsz": 64, "batch": 2, "split": "test", "plots": False, "verbose": False,
                   "iou": 0.6, "conf": 0.01, "max_det": 1, "rect": True, "workers": 0}  # fmt: skip
    assert val_args(data="d.yaml", imgsz=64, batch=2, extra={})["split"] == "val"  # the default
    assert {"iou", "conf", "max_det", "rect", "agnostic_nms", "half", "single_cls", "classes"} <= set(VAL_KEYS)
    # the split has its own option: after -- it would reach training only, where ultralytics ignores it
    with pytest.raises(UsageError, match="split is not a free training argument here: use --eval-split"):
        parse_extra(["split=test"])
