"""``bnn infer``: predictions on .npy batches and image files, test-set evaluation, and one-line errors."""

import json
import sys

import numpy as np
import pytest

from bnn_runtime.reference import predict_from_scores, reference_scores

from .conftest import assert_user_error, run_cli
from .random_models import random_config, random_inputs, random_model, to_bnn


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A LeNet-5 for 8x8 digits (the digits provenance), written to a file."""
    rng = np.random.default_rng(0)
    cfg = random_config(rng, "lenet5", "heaviside", True, width=0.5, in_shape=(1, 8, 8), num_classes=10)
    bnn, data = to_bnn(random_model(cfg, 0), cfg)
    path = tmp_path_factory.mktemp("infer") / "digits.bnn"
    manifest = dict(bnn.manifest)
    manifest["provenance"] = {"dataset": "digits"}
    from bnn_runtime.format import parse, to_bytes

    data = to_bytes({k: v for k, v in manifest.items() if k != "arrays"}, bnn.arrays)
    path.write_bytes(data)
    return path, parse(data)


def test_npy_batch_as_json(model, tmp_path):
    path, bnn = model
    x = random_inputs(np.random.default_rng(1), (1, 8, 8), 12)
    np.save(tmp_path / "x.npy", x[:, 0])
    result = run_cli("infer", path, "--npy", tmp_path / "x.npy", "--format", "json", "--threads", "1")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    ref = reference_scores(bnn, x)
    assert [p["index"] for p in out["predictions"]] == predict_from_scores(bnn, ref).tolist()
    assert [p["scores"] for p in out["predictions"]] == ref.tolist()
    assert out["predictions"][0]["class"] == bnn.classes[out["predictions"][0]["index"]]


def test_image_files_grayscale_table_and_csv(model, tmp_path):
    from PIL import Image

    path, bnn = model
    x = random_inputs(np.random.default_rng(2), (1, 8, 8), 3)[:, 0]
    files = []
    for i, img in enumerate(x):
        f = tmp_path / f"img{i}.png"
        if i == 0:  # an RGB file with equal channels: its grayscale conversion is the image itself
            Image.fromarray(np.stack([img] * 3, axis=-1), "RGB").save(f)
        else:
            Image.fromarray(img, "L").save(f)
        files.append(f)
    labels = predict_from_scores(bnn, reference_scores(bnn, x[:, None]))
    csv = run_cli("infer", path, *files, "--format", "csv")
    assert csv.exit_code == 0, csv.output
    rows = csv.stdout.strip().splitlines()
    assert rows[0] == "input,index,class,probability"
    assert [int(r.split(",")[1]) for r in rows[1:]] == labels.tolist()
    table = run_cli("infer", path, *files)
    assert table.exit_code == 0 and "img2.png" in table.stdout


def test_test_set_evaluation_matches_the_reference(model):
    from bnn_train.config import TrainConfig
    from bnn_train.data import load_dataset

    path, bnn = model
    data = load_dataset(TrainConfig(dataset="digits"))
    x, y = data.x_test.numpy()[:100], data.y_test.numpy()[:100]
    expected = float((predict_from_scores(bnn, reference_scores(bnn, x)) == y).mean())
    result = run_cli("infer", path, "--limit", "100", "--format", "json", "--threads", "2")  # dataset from provenance
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dataset"] == "digits" and out["images"] == 100 and out["threads"] == 2
    assert out["accuracy"] == pytest.approx(expected, abs=0)
    assert out["images_per_second"] > 0
    assert run_cli("infer", path, "--dataset", "digits", "--format", "csv").exit_code == 0


def test_bad_input_files(model, tmp_path):
    path, _ = model
    np.save(tmp_path / "wrong.npy", np.zeros((2, 7, 8), np.uint8))
    assert_user_error(
        run_cli("infer", path, "--npy", tmp_path / "wrong.npy"), "images are 7×8 (H×W), the model takes 8×8"
    )
    np.save(tmp_path / "nan.npy", np.full((2, 8, 8), np.nan))
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "nan.npy"), "NaN")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.uint8))
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "empty.npy"), "empty batch")
    np.save(tmp_path / "chan.npy", np.zeros((2, 3, 8, 8), np.uint8))
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "chan.npy"), "3 channels")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "obj.npy"), "not a readable .npy")
    (tmp_path / "text.npy").write_text("hello")
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "text.npy"), "not a readable .npy")
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "missing.npy"), "no such file")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    assert_user_error(run_cli("infer", path, tmp_path / "bad.png"), "cannot decode the image")
    assert_user_error(run_cli("infer", path, tmp_path / "nope.png"), "no such file")
    from PIL import Image

    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "big.png")
    assert_user_error(run_cli("infer", path, tmp_path / "big.png"), "image is 9×8 (H×W), the model takes 8×8")


def test_a_damaged_image_that_makes_pillow_warn_is_still_one_line(model, tmp_path):
    """Pillow warns about a TIFF with corrupt EXIF before refusing it; in a real process (pytest would record the
    warning itself) stderr holds only the command's own line."""
    import subprocess

    path, _ = model
    (tmp_path / "x.png").write_bytes(b"II*\x00garbage")  # a TIFF header, then nothing valid
    code = "import sys; from bnn_cli.main import app; sys.argv = ['bnn', *sys.argv[1:]]; app()"
    r = subprocess.run(
        [sys.executable, "-c", code, "infer", str(path), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"error: {tmp_path / 'x.png'}: cannot decode the image "
        f"(UnidentifiedImageError: cannot identify image file "
        f"'{tmp_path / 'x.png'}')"
    ], r.stderr


def test_without_pillow_images_need_npy(model, tmp_path, monkeypatch):
    path, _ = model
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    (tmp_path / "a.png").write_bytes(b"x")
    assert_user_error(run_cli("infer", path, tmp_path / "a.png"), "needs Pillow", "--npy")


def test_bad_model_files_and_options(model, tmp_path):
    path, _ = model
    (tmp_path / "corrupt.bnn").write_bytes(path.read_bytes()[:-3])
    assert_user_error(run_cli("infer", tmp_path / "corrupt.bnn", "--limit", "5"), "truncated", code=1)
    (tmp_path / "foreign.bnn").write_bytes(b"PK\x03\x04" + b"\0" * 80)
    assert_user_error(run_cli("infer", tmp_path / "foreign.bnn"), "not a .bnn file", code=1)
    assert_user_error(run_cli("infer", tmp_path / "missing.bnn"), "no such file", code=1)
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8), np.uint8))
    assert_user_error(run_cli("infer", path, tmp_path / "x.png", "--npy", tmp_path / "x.npy"), "not both")
    assert_user_error(run_cli("infer", path, "--npy", tmp_path / "x.npy", "--dataset", "digits"), "do not combine")
    assert_user_error(run_cli("infer", path, "--limit", "0"), "--limit must be a positive integer")
    assert_user_error(run_cli("infer", path, "--threads", "0", "--limit", "3"), "threads must be an integer from 1")
    assert_user_error(run_cli("infer", path, "--dataset", "cifar"), "cifar", code=2)
    assert_user_error(run_cli("infer", path, "--format", "xml", "--limit", "2"), "xml", code=2)
    assert_user_error(run_cli("infer", path, "--dataset", "ones"), "2 classes, the model 10")


def test_a_model_without_a_dataset_needs_input(tmp_path):
    rng = np.random.default_rng(4)
    cfg = random_config(rng, "mlp", "sign", True, hidden=(5,), in_shape=(6,))
    _, data = to_bnn(random_model(cfg, 4), cfg)
    (tmp_path / "m.bnn").write_bytes(data)
    assert_user_error(run_cli("infer", tmp_path / "m.bnn"), "names no dataset", "--dataset")
    assert_user_error(run_cli("infer", tmp_path / "m.bnn", tmp_path / "a.png"), "not images", "--npy")


def test_png_files_are_scaled_to_the_models_input_range(model, tmp_path):
    """A Digits model (0..16) gets round(x * 16 / 255) of a 0..255 PNG; a file without the range, the raw pixels."""
    from PIL import Image

    from bnn_runtime.format import parse, to_bytes
    from bnn_runtime.reference import reference_logits, softmax

    path, bnn = model
    manifest = {k: v for k, v in bnn.manifest.items() if k != "arrays"}
    described = parse(
        to_bytes(
            {**manifest, "input": {**manifest["input"], "range": [0, 16], "layout": "CHW", "color": "L"}},
            dict(bnn.arrays),
        )
    )
    (tmp_path / "d.bnn").write_bytes(
        to_bytes({k: v for k, v in described.manifest.items() if k != "arrays"}, dict(described.arrays))
    )
    pixels = np.random.default_rng(7).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    files = []
    for i, img in enumerate(pixels):
        Image.fromarray(img, "L").save(tmp_path / f"p{i}.png")
        files.append(tmp_path / f"p{i}.png")
    scaled = np.floor(pixels.astype(np.float64) * 16 / 255 + 0.5).astype(np.uint8)[:, None]
    for bnn_path, x in ((tmp_path / "d.bnn", scaled), (path, pixels[:, None])):
        result = run_cli("infer", bnn_path, *files, "--format", "json", "--logits")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["predictions"]
        logits = reference_logits(bnn, x)
        assert [r["index"] for r in rows] == logits.argmax(axis=1).tolist()
        assert np.allclose([r["logits"] for r in rows], logits, rtol=1e-12, atol=0)
        assert np.allclose([r["probability"] for r in rows], softmax(logits).max(axis=1), rtol=1e-12, atol=0)


def test_table_shows_probability_and_logits(model, tmp_path):
    path, bnn = model
    x = random_inputs(np.random.default_rng(8), (1, 8, 8), 2)
    np.save(tmp_path / "x.npy", x)
    table = run_cli("infer", path, "--npy", tmp_path / "x.npy", "--logits")
    assert table.exit_code == 0, table.output
    assert "probability" in table.stdout and "logits" in table.stdout and "%" in table.stdout
    csv = run_cli("infer", path, "--npy", tmp_path / "x.npy", "--format", "csv", "--logits")
    header, *rows = csv.stdout.strip().splitlines()
    assert header == "input,index,class,probability," + ",".join(f"logit_{c}" for c in bnn.classes)
    assert len(rows) == 2 and all(len(r.split(",")) == 4 + len(bnn.classes) for r in rows)


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("bnn (untied-bnn) ") and "numba" in result.stdout
