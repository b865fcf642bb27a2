"""The synthetic detection dataset: YOLO layout, valid labels, deterministic, written atomically (fast, no torch)."""

from pathlib import Path

import pytest
import yaml
from PIL import Image

from mhsa_patch.child import synthetic
from mhsa_patch.child.synthetic import NAMES, write_dataset


def test_layout_labels_and_yaml(tmp_path):
    data = write_dataset(tmp_path / "shapes", n_train=6, n_val=3, imgsz=96, seed=1)
    root = tmp_path / "shapes"
    assert data == root / "data.yaml"
    cfg = yaml.safe_load(data.read_text())
    assert Path(cfg["path"]).is_absolute() and Path(cfg["path"]) == root.resolve()
    assert cfg["train"] == "images/train" and cfg["val"] == "images/val"
    assert cfg["names"] == dict(enumerate(NAMES))
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((root / "images" / split).glob("*.jpg"))
        labels = sorted((root / "labels" / split).glob("*.txt"))
        assert len(images) == n and [p.stem for p in images] == [p.stem for p in labels]
        for img, lab in zip(images, labels):
            with Image.open(img) as im:
                assert im.size == (96, 96) and im.mode == "RGB"
            rows = [line.split() for line in lab.read_text().splitlines()]
            assert 1 <= len(rows) <= 3
            for row in rows:
                assert len(row) == 5
                c, *box = int(row[0]), *map(float, row[1:])
                assert 0 <= c < len(NAMES)
                cx, cy, w, h = box
                assert 0 < w <= 1 and 0 < h <= 1
                assert 0 <= cx - w / 2 + 1e-6 and cx + w / 2 <= 1 + 1e-6
                assert 0 <= cy - h / 2 + 1e-6 and cy + h / 2 <= 1 + 1e-6


def test_shapes_are_drawn_where_the_labels_say(tmp_path):
    """The labelled box holds the shape's colour at its centre, not the grey background."""
    write_dataset(tmp_path / "d", n_train=4, n_val=1, imgsz=128, seed=3, max_objects=1)
    for lab in sorted((tmp_path / "d" / "labels" / "train").glob("*.txt")):
        c, cx, cy, w, h = lab.read_text().split()
        with Image.open(tmp_path / "d" / "images" / "train" / f"{lab.stem}.jpg") as im:
            x, y = int(float(cx) * 128), int(float(cy) * 128 + (float(h) * 128 / 4 if c == "2" else 0))
            r, g, b = im.convert("RGB").getpixel((x, y))
        assert max(r, g, b) - min(r, g, b) > 60, f"{lab.stem}: grey at the box centre"


def test_deterministic(tmp_path):
    a = write_dataset(tmp_path / "a", n_train=3, n_val=1, imgsz=64, seed=7).parent
    b = write_dataset(tmp_path / "b", n_train=3, n_val=1, imgsz=64, seed=7).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert files
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_empty_folder_is_fine_a_full_one_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    write_dataset(tmp_path / "empty", n_train=2, n_val=1, imgsz=64)
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path / "empty", n_train=2, n_val=1, imgsz=64)


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_val": 0}, {"imgsz": 16}, {"max_objects": 0}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_nothing_half_written(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic._draw_image

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(synthetic, "_draw_image", flaky)
    with pytest.raises(OSError):
        write_dataset(tmp_path / "d", n_train=4, n_val=1, imgsz=64)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder


def test_module_entry_point(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "d"), "2", "1", "64"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "data.yaml")
    assert synthetic.main([]) == 2
