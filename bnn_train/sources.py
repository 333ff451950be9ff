"""Your own data: CIFAR-10, an ImageFolder tree (``folder:PATH``) and NumPy arrays (``npz:PATH``).

Each source gives uint8 arrays ``(x_train, y_train, x_test, y_test)`` with images as (N, C, H, W),
C = 1 or 3, plus class names; ``*_shape`` functions tell the input shape and class count from
headers and folder listings alone, so a configuration is checked before any image is decoded.

* ``cifar10``: the python batches (``cifar-10-batches-py``, read with an unpickler that admits
  NumPy arrays and nothing else) or the binary ones (``cifar-10-batches-bin``), from --data-dir, or
  downloaded by torchvision into the cache.
* ``folder:PATH``: torchvision's ImageFolder layout, one sub-folder per class; ``PATH/train`` and
  ``PATH/test`` when present, else a seeded stratified 80/20 split. Images are converted to the
  channel count of the first image (grayscale -> 1, anything else -> 3) and, with ``--input-size``,
  resized; without it every image must have the first one's size.
* ``npz:PATH``: uint8 ``x_train``, ``x_test`` ((N, H, W), (N, C, H, W), (N, H, W, C) or (N, D)) and
  integer ``y_train``, ``y_test``; optional ``classes`` (strings).

Every problem is a DatasetError naming the file.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_SHAPE = (3, 32, 32)
PREFIXES = ("folder:", "npz:")


def parse_input_size(text: str) -> tuple[int | None, int, int]:
    """``"32x32"`` -> (None, 32, 32); ``"1x28x28"`` -> (1, 28, 28) (channels, height, width)."""
    m = re.fullmatch(r"(?:([13])x)?(\d+)x(\d+)", text.strip().lower())
    if not m or int(m[2]) < 1 or int(m[3]) < 1:
        raise ConfigError(f"--input-size must be HxW or CxHxW with C = 1 or 3, e.g. 32x32 or 1x28x28, got {text!r}")
    return (int(m[1]) if m[1] else None), int(m[2]), int(m[3])


def source_path(dataset: str) -> Path:
    return Path(dataset.split(":", 1)[1]).expanduser()


# --------------------------------------------------------------------------- CIFAR-10


class _NumpyOnly(pickle.Unpickler):
    """The CIFAR python batches hold dicts of NumPy arrays, lists and bytes: admit nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _NumpyOnly(f, encoding="latin1").load()
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, *CIFAR10_SHAPE)
        y = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as e:
        raise DatasetError(f"cannot read {path}: not a CIFAR-10 python batch ({e})") from None
    if len(x) != len(y):
        raise DatasetError(f"cannot read {path}: {len(x)} images but {len(y)} labels")
    return x, y


def _cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"cannot read {path} ({e.strerror or e})") from None
    record = 1 + int(np.prod(CIFAR10_SHAPE))
    if raw.size == 0 or raw.size % record:
        raise DatasetError(f"cannot read {path}: not a CIFAR-10 binary batch ({raw.size} bytes)")
    raw = raw.reshape(-1, record)
    return raw[:, 1:].reshape(-1, *CIFAR10_SHAPE), raw[:, 0].astype(np.int64)


def _cifar_files(folder: Path):
    for sub, reader, train, test in (
        ("cifar-10-batches-bin", _cifar_bin, [f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"),
        ("cifar-10-batches-py", _cifar_py, [f"data_batch_{i}" for i in range(1, 6)], "test_batch"),
    ):
        for d in (folder, folder / sub):
            if all((d / f).is_file() for f in (*train, test)):
                return reader, [d / f for f in train], d / test
    return None


def load_cifar10(data_dir: str | None, cache: Path):
    """CIFAR-10's 50,000 / 10,000 images from --data-dir, else the cache, downloading there when online."""
    folder = Path(data_dir).expanduser() if data_dir else cache
    found = _cifar_files(folder)
    if found is None and data_dir:
        raise DatasetError(
            f"cifar10 is not in --data-dir {folder}: expected cifar-10-batches-py/ (data_batch_1..5, "
            "test_batch) or cifar-10-batches-bin/ there"
        )
    if found is None:
        try:
            import torchvision

            folder.mkdir(parents=True, exist_ok=True)
            torchvision.datasets.CIFAR10(str(folder), train=True, download=True)
        except Exception as e:  # torchvision raises URLError/OSError/RuntimeError on failure
            raise DatasetError(
                f"cifar10 is not in the cache {folder} and could not be downloaded "
                f"({str(e).splitlines()[-1] if str(e) else type(e).__name__}); pass --data-dir"
            ) from None
        found = _cifar_files(folder)
        if found is None:  # pragma: no cover - torchvision wrote something unexpected
            raise DatasetError(f"download of cifar10 into {folder} left no batches")
    reader, train_files, test_file = found
    parts = [reader(f) for f in train_files]
    x_te, y_te = reader(test_file)
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    for y, f in ((y_tr, train_files[0]), (y_te, test_file)):
        if y.min(initial=0) < 0 or y.max(initial=0) >= len(CIFAR10_CLASSES):
            raise DatasetError(f"{f}: labels outside 0..9")
    return x_tr, y_tr, x_te, y_te, CIFAR10_CLASSES, str(test_file.parent)


# --------------------------------------------------------------------------- ImageFolder


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images(class_dir: Path) -> list[Path]:
    return sorted(f for f in class_dir.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _folder_index(path: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(class names, {"train": [(file, label)], "test": [...]} or {"all": [...]}) from the listing alone."""
    if not path.is_dir():
        raise DatasetError(f"folder:{path}: no such folder")
    split = (path / "train").is_dir() and (path / "test").is_dir()
    roots = {"train": path / "train", "test": path / "test"} if split else {"all": path}
    classes = [d.name for d in _class_dirs(next(iter(roots.values())))]
    if not classes:
        raise DatasetError(f"{next(iter(roots.values()))}: no class sub-folders (ImageFolder layout: ROOT/CLASS/IMAGE)")
    index = {}
    for part, root in roots.items():
        names = [d.name for d in _class_dirs(root)]
        if names != classes:
            raise DatasetError(f"{root}: its class folders {names} differ from {classes}")
        index[part] = [(f, label) for label, c in enumerate(classes) for f in _images(root / c)]
        for c in classes:
            if not _images(root / c):
                raise DatasetError(f"{root / c}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(classes) < 2:
        raise DatasetError(f"folder:{path}: needs at least two class folders, found {classes}")
    return classes, index


def _open(f: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(f)
        img.load()
        return img
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read image {f}: {e}") from None


def _peek(f: Path) -> tuple[int, int, int]:
    """(channels, height, width) of an image from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as img:
            return (1 if img.mode in ("1", "L", "I", "I;16", "F") else 3), img.height, img.width
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"cannot read image {f}: {e}") from None


def folder_shape(path: Path, input_size: str) -> tuple[tuple[int, int, int], int]:
    classes, index = _folder_index(path)
    first = next(iter(index.values()))[0][0]
    c, h, w = _peek(first)
    if input_size:
        size_c, h, w = parse_input_size(input_size)
        c = size_c or c
    return (c, h, w), len(classes)


def load_folder(path: Path, input_size: str, split):
    """An ImageFolder tree as uint8 arrays; ``split(x, y)`` makes the 80/20 split when there is no train/test."""
    classes, index = _folder_index(path)
    (c, h, w), _ = folder_shape(path, input_size)
    mode = "L" if c == 1 else "RGB"
    arrays = {}
    for part, items in index.items():
        x = np.empty((len(items), c, h, w), np.uint8)
        for i, (f, _) in enumerate(items):
            img = _open(f).convert(mode)
            if (img.height, img.width) != (h, w):
                if not input_size:
                    raise DatasetError(
                        f"{f} is {img.width}x{img.height}, other images {w}x{h}: pass --input-size HxW "
                        "to resize them all"
                    )
                img = img.resize((w, h), resample=2)  # bilinear
            a = np.asarray(img, dtype=np.uint8)
            x[i] = a[None] if c == 1 else a.transpose(2, 0, 1)
        arrays[part] = (x, np.array([label for _, label in items], np.int64))
    if "all" in arrays:
        try:
            x_tr, x_te, y_tr, y_te = split(*arrays["all"])
        except ValueError as e:
            raise DatasetError(
                f"folder:{path}: too few images for a stratified 80/20 split ({e}); "
                "give it train/ and test/ sub-folders"
            ) from None
    else:
        (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
    return x_tr, y_tr, x_te, y_te, classes, str(path)


# --------------------------------------------------------------------------- npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            return tuple(shape), dtype
    except KeyError:
        raise DatasetError(f"{path} has no array {key!r} (an npz dataset holds {', '.join(NPZ_KEYS)})") from None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise DatasetError(f"cannot read {path}: not a NumPy .npz file ({e})") from None


def _image_shape(shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
    """(per-image shape as the model sees it, layout) of an x array's shape."""
    if len(shape) == 2:
        return shape[1:], "flat"
    if len(shape) == 3:
        return (1, *shape[1:]), "NHW"
    if len(shape) == 4 and shape[1] in (1, 3):
        return shape[1:], "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return (shape[3], shape[1], shape[2]), "NHWC"
    raise ValueError(shape)


def _npz_x_shape(path: Path) -> tuple[int, ...]:
    shapes = {}
    for key in ("x_train", "x_test"):
        shape, dtype = _npz_header(path, key)
        if dtype != np.uint8:
            raise DatasetError(f"{path}: {key} must be uint8, got {dtype}")
        try:
            shapes[key] = _image_shape(shape)[0]
        except ValueError:
            raise DatasetError(
                f"{path}: {key} has shape {list(shape)}; expected (N, D), (N, H, W), (N, C, H, W) "
                "or (N, H, W, C) with C = 1 or 3"
            ) from None
    if shapes["x_train"] != shapes["x_test"]:
        raise DatasetError(
            f"{path}: x_train images {list(shapes['x_train'])} and x_test {list(shapes['x_test'])} differ"
        )
    return shapes["x_train"]


def _npz_labels(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{path} has no array {missing[0]!r} (an npz dataset holds {', '.join(NPZ_KEYS)})")
            y_tr, y_te = z["y_train"], z["y_test"]
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    for key, y in (("y_train", y_tr), ("y_test", y_te)):
        if y.ndim != 1 or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise DatasetError(f"{path}: {key} must be a 1-D array of non-negative integer labels")
    n = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    classes = classes or [str(i) for i in range(max(n, 2))]
    if n > len(classes):
        raise DatasetError(f"{path}: label {n - 1} but only {len(classes)} classes")
    return y_tr.astype(np.int64), y_te.astype(np.int64), classes


def npz_shape(path: Path) -> tuple[tuple[int, ...], int]:
    if not path.is_file():
        raise DatasetError(f"npz:{path}: no such file")
    return _npz_x_shape(path), len(_npz_labels(path)[2])


def load_npz(path: Path):
    npz_shape(path)
    y_tr, y_te, classes = _npz_labels(path)
    with np.load(path, allow_pickle=False) as z:
        xs = []
        for key, y in (("x_train", y_tr), ("x_test", y_te)):
            x = z[key]
            layout = _image_shape(x.shape)[1]
            x = x[:, None] if layout == "NHW" else x.transpose(0, 3, 1, 2) if layout == "NHWC" else x
            if len(x) != len(y):
                raise DatasetError(f"{path}: {key} has {len(x)} images but {len(y)} labels")
            xs.append(x)
    return xs[0], y_tr, xs[1], y_te, classes, str(path)
