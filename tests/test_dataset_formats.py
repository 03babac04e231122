"""CIFAR-10/100 python folders and IDX (MNIST) folders read as their publishers ship them.

The fixtures are written byte for byte the way the real files are laid out: CIFAR's batches are
Python 2 ``cPickle`` protocol-2 streams (``str`` as ``BINSTRING``, numpy arrays through
``numpy.core.multiarray._reconstruct``), IDX files a big-endian magic number, the dimensions and
the raw bytes.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cnngraph.datasets import load_dataset
from cnngraph.errors import DataError

runner = CliRunner()
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------ a Python 2 cPickle writer
class Py2Pickle:
    """Protocol 2 as Python 2's cPickle wrote the CIFAR files (memoised with BINPUT)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo = 0

    def put(self) -> None:
        self.memo += 1
        self.out += b"q" + bytes([self.memo])

    def string(self, data: bytes, memo: bool = True) -> None:  # a Python 2 str
        self.out += (
            b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))
        ) + data
        if memo:
            self.put()

    def integer(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif 0 <= n < 65536:
            self.out += b"M" + struct.pack("<H", n)
        else:
            self.out += b"J" + struct.pack("<i", n)

    def glob(self, module: str, name: str) -> None:
        self.out += b"c" + f"{module}\n{name}\n".encode()
        self.put()

    def array(self, a: np.ndarray) -> None:
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.out += b"K\x00\x85"  # (0,)
        self.string(b"b", memo=False)
        self.out += b"\x87R"  # tuple3, REDUCE
        self.put()
        self.out += b"(K\x01"  # MARK, version 1
        for d in a.shape:
            self.integer(d)
        self.out += b"\x86" if a.ndim == 2 else b"\x85"
        self.glob("numpy", "dtype")
        self.string(a.dtype.str[1:].encode(), memo=False)  # 'u1'
        self.out += b"K\x00K\x01\x87R"
        self.put()
        self.out += b"(K\x03"
        self.string(b"|", memo=False)
        self.out += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # dtype state, BUILD
        self.out += b"\x89"  # not Fortran order
        self.string(a.tobytes(), memo=False)
        self.out += b"tb"  # array state, BUILD

    def value(self, v: Any) -> None:
        if isinstance(v, bytes):
            self.string(v)
        elif isinstance(v, int):
            self.integer(v)
        elif isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, list):
            self.out += b"]"
            self.put()
            self.out += b"("
            for item in v:
                self.value(item)
            self.out += b"e"
        elif isinstance(v, dict):
            self.out += b"}"
            self.put()
            self.out += b"("
            for key, item in v.items():
                self.string(key)
                self.value(item)
            self.out += b"u"
        else:
            raise TypeError(type(v))

    @classmethod
    def dumps(cls, obj: Any) -> bytes:
        p = cls()
        p.value(obj)
        return bytes(p.out + b".")


def test_the_py2_writer_is_what_python_reads_as_a_cifar_file() -> None:
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = Py2Pickle.dumps({b"data": data, b"labels": [3, 7], b"batch_label": b"training batch 1 of 5"})
    assert raw[:4] == b"\x80\x02}q"  # as the real data_batch_1 starts
    loaded = pickle.loads(raw, encoding="bytes")  # how the CIFAR page says to read them
    np.testing.assert_array_equal(loaded[b"data"], data)
    assert loaded[b"labels"] == [3, 7]


# ------------------------------------------------------------------ fixtures
def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for k in range(1, 6):
        labels = [(k + i) % 10 for i in range(4)]
        batch = {
            b"data": _images(4, k),
            b"labels": labels,
            b"batch_label": f"training batch {k} of 5".encode(),
            b"filenames": [f"img_{k}_{i}.png".encode() for i in range(4)],
        }
        (folder / f"data_batch_{k}").write_bytes(Py2Pickle.dumps(batch))
    test = {b"data": _images(3, 9), b"labels": [0, 9, 5], b"batch_label": b"testing batch 1 of 1",
            b"filenames": [b"t0.png", b"t1.png", b"t2.png"]}  # fmt: skip
    (folder / "test_batch").write_bytes(Py2Pickle.dumps(test))
    meta = {
        b"num_cases_per_batch": 10000,
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(Py2Pickle.dumps(meta))
    (folder / "readme.html").write_text("<html></html>")
    return tmp_path


@pytest.fixture
def cifar100(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for split, n, seed in (("train", 6, 1), ("test", 2, 2)):
        batch = {
            b"filenames": [f"f{i}.png".encode() for i in range(n)],
            b"batch_label": split.encode(),
            b"fine_labels": [(7 * i + seed) % 100 for i in range(n)],
            b"coarse_labels": [(3 * i + seed) % 20 for i in range(n)],
            b"data": _images(n, seed),
        }
        (folder / split).write_bytes(Py2Pickle.dumps(batch))
    meta = {b"fine_label_names": [f"fine{h}".encode() for h in range(100)],
            b"coarse_label_names": [f"coarse{h}".encode() for h in range(20)]}  # fmt: skip
    (folder / "meta").write_bytes(Py2Pickle.dumps(meta))
    return folder


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def mnist_folder(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], gz: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images[split], gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels[split], gz)
    return root


@pytest.fixture
def mnist_arrays() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    images = {
        "train": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
    }
    labels = {
        "train": np.array([5, 0, 4, 1, 9, 2, 1], dtype=np.uint8),
        "test": np.array([7, 2, 1], dtype=np.uint8),
    }
    return images, labels


# ------------------------------------------------------------------ CIFAR
def test_cifar10_train_and_test(cifar10: Path) -> None:
    for given in (cifar10, cifar10 / "cifar-10-batches-py"):  # the folder itself or the one above it
        train = load_dataset(given, "train")
        assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.float32
        assert train.class_names == CIFAR10_NAMES
        assert train.labels.tolist() == [(k + i) % 10 for k in range(1, 6) for i in range(4)]
        first = _images(4, 1)[0].reshape(3, 32, 32)  # row-major: 1024 red, 1024 green, 1024 blue values
        np.testing.assert_allclose(train.images[0].numpy(), first / 255.0, rtol=1e-6)
        test = load_dataset(given, "test")
        assert len(test) == 3 and test.labels.tolist() == [0, 9, 5]
    assert len(load_dataset(cifar10)) == 20  # no split: train


def test_cifar100_fine_and_coarse(cifar100: Path) -> None:
    fine = load_dataset(cifar100, "train")
    assert len(fine.class_names) == 100 and fine.class_names[7] == "fine7"
    assert fine.labels.tolist() == [(7 * i + 1) % 100 for i in range(6)]
    coarse = load_dataset(f"{cifar100}?labels=coarse", "test")
    assert len(coarse.class_names) == 20 and coarse.labels.tolist() == [2, 5]
    np.testing.assert_array_equal(coarse.images.numpy(), load_dataset(cifar100, "test").images.numpy())
    with pytest.raises(DataError, match=r"CIFAR-100 labels are 'fine'.*not 'medium'"):
        load_dataset(f"{cifar100}?labels=medium")
    with pytest.raises(DataError, match="has the splits train and test, not 'val'"):
        load_dataset(cifar100, "val")


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/cnngraph-pwned",))


def test_a_pickle_that_would_run_code_is_refused(cifar10: Path, tmp_path: Path) -> None:
    folder = cifar10 / "cifar-10-batches-py"
    marker = tmp_path / "ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Exploit()}, protocol=2))
    with pytest.raises(
        DataError, match=r"data_batch_3' is refused as a CIFAR file: it refers to 'posix.system'"
    ):
        load_dataset(cifar10, "train")
    assert not marker.exists()
    # an object array would unpickle arbitrary objects: refused too
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({"data": np.array([1, "x"], dtype=object)}, protocol=2)
    )
    with pytest.raises(DataError, match="refused as a CIFAR file"):
        load_dataset(cifar10, "train")


def test_a_python3_repickled_cifar_batch_reads_too(cifar10: Path) -> None:
    """Someone who re-saved a batch with Python 3 (protocols 2 and 5, numpy 2) is not refused."""
    folder = cifar10 / "cifar-10-batches-py"
    for protocol in (2, 5):
        batch = {"data": _images(4, 1), "labels": [1, 2, 3, 4], "batch_label": "again"}
        (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
        assert load_dataset(cifar10, "train").labels.tolist()[:4] == [1, 2, 3, 4]


def test_damaged_cifar_files_are_one_line_errors(cifar10: Path) -> None:
    folder = cifar10 / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(
        Py2Pickle.dumps({b"data": _images(4, 1)[:, :100], b"labels": [1, 2, 3, 4]})
    )
    with pytest.raises(DataError, match=r"'data' is uint8\[4, 100\], expected uint8 \[N, 3072\]"):
        load_dataset(cifar10)
    (folder / "data_batch_2").write_bytes(b"\x80\x02}q\x01(U\x04data")  # cut short
    with pytest.raises(DataError, match="data_batch_2' is not a readable CIFAR file"):
        load_dataset(cifar10)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="lacks data_batch_2"):
        load_dataset(cifar10)


# ------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_folder(tmp_path: Path, mnist_arrays: Any, gz: bool) -> None:
    images, labels = mnist_arrays
    folder = mnist_folder(tmp_path / "mnist", images, labels, gz)
    train = load_dataset(folder, "train")
    assert train.images.shape == (7, 1, 28, 28) and train.class_names == [str(h) for h in range(10)]
    np.testing.assert_allclose(train.images[:, 0].numpy(), images["train"] / 255.0, rtol=1e-6)
    assert train.labels.tolist() == labels["train"].tolist()
    test = load_dataset(folder, "test")
    assert test.labels.tolist() == [7, 2, 1]


def test_fashion_mnist_in_torchvision_layout_gets_its_class_names(tmp_path: Path, mnist_arrays: Any) -> None:
    images, labels = mnist_arrays
    mnist_folder(tmp_path / "FashionMNIST" / "raw", images, labels, gz=True)
    data = load_dataset(tmp_path / "FashionMNIST", "test")
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_damaged_idx_files_are_one_line_errors(tmp_path: Path, mnist_arrays: Any) -> None:
    images, labels = mnist_arrays
    folder = mnist_folder(tmp_path / "m", images, labels, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"needs 5,504; the file is cut or damaged"):
        load_dataset(folder, "train")
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match="is not an IDX file"):
        load_dataset(folder, "train")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([1, 2], dtype=np.uint8))
    with pytest.raises(DataError, match=r"has 3 images but .* 2 labels"):
        load_dataset(folder, "test")


def test_cifar_maps_through_the_cli(cifar10: Path, tmp_path: Path, cli_app: Any) -> None:
    out = tmp_path / "m.npz"
    result = runner.invoke(
        cli_app,
        [
            "map",
            "small_cnn",
            str(cifar10),
            "--split",
            "test",
            "--width",
            "0.25",
            "--out",
            str(out),
            "--images-per-class",
            "2",
            "--classes",
            "airplane,dog,truck",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "class 'airplane' has only 1 image;" in result.output
    assert "warning: small_cnn has no --checkpoint" in result.output


@pytest.mark.slow
def test_the_shared_mnist_as_idx_reads_the_same_as_its_npz(tmp_path: Path) -> None:
    """A realistic check: the shared 10,000 MNIST test images written as IDX, read back, equal the npz."""
    shared = Path("/work/shared/datasets/mnist-10k.npz")
    if not shared.is_file():
        pytest.skip("the shared MNIST npz is not on this machine")
    with np.load(shared) as data:
        images, labels = data["images"], data["labels"]
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    write_idx(folder / "t10k-images-idx3-ubyte", images.astype(np.uint8), compress=True)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels.astype(np.uint8), compress=True)
    from_idx = load_dataset(tmp_path / "MNIST", "test")
    from_npz = load_dataset(shared)
    assert len(from_idx) == 10_000
    assert torch.equal(from_idx.images, from_npz.images)
    assert torch.equal(from_idx.labels, from_npz.labels)
