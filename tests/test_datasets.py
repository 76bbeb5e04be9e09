"""Data sets: shipped copies load, splits are seeded (vowels by speaker), IDX files parse, encoding fits bounds."""

import gzip
import struct

import numpy as np
import pytest
import torch

from hil.datasets import MinMaxEncoder, _vowels, load_dataset, read_idx
from hil.errors import ConfigError


def test_digits_shape_classes_and_seeded_split() -> None:
    data = load_dataset("digits", seed=3)
    assert data.n_features == 64 and data.n_classes == 10
    assert len(data.y_train) + len(data.y_test) == 1797
    assert len(data.y_test) == round(1797 * 0.2)
    again = load_dataset("digits", seed=3)
    assert torch.equal(data.y_test, again.y_test)
    assert not torch.equal(data.y_test, load_dataset("digits", seed=4).y_test)
    assert float(data.x_train.max()) == 16.0


def test_vowels_split_by_speaker_with_no_speaker_in_both() -> None:
    _, _, classes, speakers = _vowels()
    assert classes == ("ae", "ah", "aw", "er", "ih", "iy", "uw") and len(speakers) == 258
    data = load_dataset("vowels", seed=0, test_fraction=0.25)
    assert data.n_features == 12 and len(data.y_train) + len(data.y_test) == 258
    assert 0.15 < len(data.y_test) / 258 < 0.35
    # no speaker in both: each row is told by its features (no two recordings are equal), for several splits
    x, _, _, _ = _vowels()
    speaker_of = {tuple(row): speaker for row, speaker in zip(x.astype(np.float32).tolist(), speakers, strict=True)}
    assert len(speaker_of) == 258
    for seed in range(5):
        data = load_dataset("vowels", seed=seed, test_fraction=0.25)
        train, test = ({speaker_of[tuple(row)] for row in part.tolist()} for part in (data.x_train, data.x_test))
        assert not train & test and len(train | test) == len(set(speakers)) == 48
        assert len(test) == round(48 * 0.25)  # the fraction is of the speakers


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_load_and_pool(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    data = load_dataset("idx", path=tmp_path, pool=4, limit=10)
    assert data.x_train.shape == (10, 49) and data.x_test.shape == (6, 49)
    images = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").astype(float)
    assert data.x_test[0, 0] == pytest.approx(images[0, :4, :4].mean())


def test_bad_idx_file_and_unknown_dataset_are_config_errors(tmp_path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rubbish")
    with pytest.raises(ConfigError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(ConfigError, match="unknown data set"):
        load_dataset("cifar")


def test_minmax_encoder_maps_training_range_onto_bounds_and_clips() -> None:
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    encode = MinMaxEncoder(x, (-1.0, 1.0))
    assert torch.allclose(encode(x), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.allclose(encode(torch.tensor([[5.0, 20.0]])), torch.tensor([[1.0, 0.0]]))


def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.astype(np.uint8).tobytes()


_GZIPPED = gzip.compress(_idx_bytes(np.random.default_rng(0).integers(0, 10, 5000)), mtime=0)


@pytest.mark.parametrize(("data", "needle"), [
    (b"\x00\x00\x08\x03\x00\x00", "the IDX header is cut off (6 bytes, 16 needed)"),
    (b"\x00\x00\x08\x00\x07", "announces 0 dimensions"),
    (b"\x00\x00\x08\xff" + b"\x00\x00\x00\x01" * 255 + b"\x01", "announces 255 dimensions"),
    # 2**31 · 2**31 · 4 wraps to 0 in 64-bit integers: an empty body must not match it
    (struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2**31, 2**31, 4), "header announces shape (2147483648, 2147483648, 4), "
                                                            "file holds 0 values"),
    (_GZIPPED[:len(_GZIPPED) // 2], "Compressed file ended"),  # a download cut short (EOFError)
    (_GZIPPED[:10] + bytes([_GZIPPED[10] ^ 0x55]) + _GZIPPED[11:], "invalid"),  # damaged deflate data (zlib.error)
], ids=["short header", "0 dims", "255 dims", "overflowing shape", "cut gzip", "damaged gzip"])
def test_a_damaged_or_lying_idx_file_is_a_config_error_naming_it(tmp_path, data: bytes, needle: str) -> None:
    path = tmp_path / ("labels.gz" if data[:2] == b"\x1f\x8b" else "labels")
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=r"download it again") as caught:
        read_idx(path)
    assert str(caught.value).count(str(path)) == 1 and needle in str(caught.value)


@pytest.mark.parametrize(("change", "field", "needle"), [
    ({"train-labels-idx1-ubyte.gz": np.arange(19) % 10}, "dataset.path",
     "train-images-idx3-ubyte.gz holds 20 images but {folder}/train-labels-idx1-ubyte.gz 19 labels"),
    ({"train-labels-idx1-ubyte.gz": np.zeros((20, 2))}, "dataset.path", "labels of shape (20, 2)"),
    ({"train-images-idx3-ubyte.gz": np.zeros((20, 784))}, "dataset.path", "images of shape (20, 784)"),
    ({"t10k-images-idx3-ubyte.gz": np.zeros((6, 14, 14))}, "dataset.path",
     "t10k-images-idx3-ubyte.gz holds 14×14 images, the training set 28×28"),
    ({"t10k-images-idx3-ubyte.gz": np.zeros((0, 28, 28)), "t10k-labels-idx1-ubyte.gz": np.zeros(0)}, "dataset.path",
     "t10k-images-idx3-ubyte.gz holds no images"),
    ({}, "dataset.pool", "40 is larger than the 28×28 images"),
], ids=["fewer labels", "2-D labels", "2-D images", "test of other size", "no test images", "pool too large"])
def test_idx_files_that_do_not_make_a_data_set_are_config_errors(tmp_path, change: dict, field: str,
                                                                 needle: str) -> None:
    """Not a data set silently misaligned, without features, or one that fails mid-run."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    for name, array in change.items():
        _write_idx(tmp_path / name, array)
    with pytest.raises(ConfigError) as caught:
        load_dataset("idx", path=tmp_path, pool=40 if field == "dataset.pool" else 2)
    assert caught.value.field == field and needle.format(folder=tmp_path) in caught.value.detail


@pytest.mark.parametrize("bounds", [(0.1, 0.7), (-0.3, 0.3), (0.0, 1.0), (-1.0, 1.0)])
def test_encoded_inputs_stay_within_bounds_that_float32_cannot_hold(bounds: tuple[float, float]) -> None:
    """The system compares float32 inputs against its bounds as Python floats: 0.7 in float32 is below 0.7, but the
    affine map rounded the training maximum to 0.70000005, which the system refused."""
    x = torch.linspace(-3.0, 11.0, 301).reshape(-1, 1) * torch.tensor([1.0, 0.37, 5.0])
    encoded = MinMaxEncoder(x, bounds)(torch.cat([x, 2 * x, -x]))
    low, high = bounds
    assert low <= float(encoded.min()) and float(encoded.max()) <= high
    assert float(encoded.max()) > high - 1e-6 and float(encoded.min()) < low + 1e-6  # the whole range is used


def _shipped_copy(tmp_path, monkeypatch, relative: str, change) -> None:
    """hil's shipped data as a copy in ``tmp_path`` whose file ``relative`` is replaced by ``change(its bytes)``
    (None: removed)."""
    from importlib.resources import files

    import hil.datasets

    for name in ("digits.csv.gz", "vowels.csv"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes(files("hil").joinpath("data", name).read_bytes())
    target = tmp_path / relative
    changed = change(target.read_bytes())
    if changed is None:
        target.unlink()
    else:
        target.write_bytes(changed)
    monkeypatch.setattr(hil.datasets, "files", lambda package: tmp_path)


@pytest.mark.parametrize(("name", "relative", "change", "reason"), [
    ("vowels", "data/vowels.csv", lambda data: data[:3000], "a row with a missing or non-numeric value"),
    ("vowels", "data/vowels.csv", lambda data: data.replace(b"678", b"6x8", 1), "a row with a missing or non-numeric"),
    ("vowels", "data/vowels.csv", lambda data: data.replace(b"vowel", b"vowl", 1), "non-numeric value"),
    ("vowels", "data/vowels.csv", lambda data: data[:data.index(b"\nw02")], "1 rows of 12 features and 1 vowels"),
    ("vowels", "data/vowels.csv", lambda data: None, "No such file or directory"),
    ("digits", "data/digits.csv.gz", lambda data: data[:len(data) // 2], "Compressed file ended"),
    ("digits", "data/digits.csv.gz", lambda data: gzip.compress(b"1,2,3\n"), "1 rows of 3 values, expected 1797"),
    ("digits", "data/digits.csv.gz", lambda data: b"not gzip", "Not a gzipped file"),
])
def test_a_damaged_or_missing_shipped_data_set_is_a_config_error_naming_it(tmp_path, monkeypatch, name, relative,
                                                                           change, reason) -> None:
    """A broken install (a file cut short, edited, or gone) is one line naming the file and the fix, not a
    traceback from the CSV parser."""
    _shipped_copy(tmp_path, monkeypatch, relative, change)
    with pytest.raises(ConfigError, match="shipped with hil is missing or damaged") as raised:
        load_dataset(name)
    message = str(raised.value)
    assert str(tmp_path / relative) in message and reason in message and message.endswith("; reinstall hil")
    assert "\n" not in message and raised.value.field == "dataset.name"


def test_an_intact_copy_of_the_shipped_data_loads_as_the_shipped_data(tmp_path, monkeypatch) -> None:
    shipped = load_dataset("vowels", seed=1)
    _shipped_copy(tmp_path, monkeypatch, "data/vowels.csv", lambda data: data)
    copy = load_dataset("vowels", seed=1)
    assert torch.equal(copy.x_test, shipped.x_test) and torch.equal(copy.y_train, shipped.y_train)
