"""Data sets: shipped copies load, splits are seeded (vowels by speaker), IDX files parse, encoding fits bounds."""

import csv
import gc
import gzip
import hashlib
import struct
import sys
import warnings
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch

from hil.datasets import MinMaxEncoder, StandardEncoder, _digits, _vowels, load_dataset, read_idx
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


def _speaker_of() -> dict[tuple[float, ...], str]:
    """The speaker of each vowel recording, by its features as the data set holds them (float32)."""
    x, _, _, speakers = _vowels()
    return {tuple(row): speaker for row, speaker in zip(x.astype(np.float32).tolist(), speakers, strict=True)}


def test_vowels_split_by_speaker_with_no_speaker_in_both() -> None:
    _, _, classes, speakers = _vowels()
    assert classes == ("ae", "ah", "aw", "er", "ih", "iy", "uw") and len(speakers) == 258
    data = load_dataset("vowels", seed=0, test_fraction=0.25)
    assert data.n_features == 12 and len(data.y_train) + len(data.y_test) == 258
    assert 0.15 < len(data.y_test) / 258 < 0.35
    # no speaker in both: each row is told by its features (no two recordings are equal), for several splits
    speaker_of = _speaker_of()
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


def test_an_idx_set_gives_the_sha256_of_each_file_it_read_as_stored(tmp_path) -> None:
    """Of the bytes on disk (a .gz file's compressed ones, as sha256sum gives them), hashed as the loader reads them;
    of the files read only: a plain file is read rather than the .gz one beside it."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    read = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", plain.name]
    data = load_dataset("idx", path=tmp_path)
    assert dict(data.files) == {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in read}
    assert load_dataset("digits").files == {} and load_dataset("vowels").files == {}  # part of hil, as its code


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
    (b"\x00\x00\x08\x03" + bytes(10), "the IDX header is cut off (14 bytes, 16 needed)"),
    (b"\x00\x00\x08\x00\x07", "announces 0 dimensions"),
    (b"\x00\x00\x08\xff" + b"\x00\x00\x00\x01" * 255 + b"\x01", "announces 255 dimensions"),
    # 2**31 · 2**31 · 4 wraps to 0 in 64-bit integers: an empty body must not match it
    (struct.pack(">BBBB3I", 0, 0, 0x08, 3, 2**31, 2**31, 4), "header announces shape (2147483648, 2147483648, 4), "
                                                            "file holds 0 values"),
    (_GZIPPED[:len(_GZIPPED) // 2], "Compressed file ended"),  # a download cut short (EOFError)
    (_GZIPPED[:10] + bytes([_GZIPPED[10] ^ 0x55]) + _GZIPPED[11:], "invalid"),  # damaged deflate data (zlib.error)
], ids=["short header", "header short of one size", "0 dims", "255 dims", "overflowing shape", "cut gzip",
        "damaged gzip"])
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


def _gunzipped(data: bytes, change) -> bytes:
    """``data`` gunzipped, changed by ``change`` and gzipped again."""
    return gzip.compress(change(gzip.decompress(data)))


def _shipped_copy(tmp_path, monkeypatch, relative: str, change) -> None:
    """hil's shipped data as a copy in ``tmp_path`` whose file ``relative`` is replaced by ``change(its bytes)``
    (None: removed)."""
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
    ("digits", "data/digits.csv.gz", lambda data: _gunzipped(data, lambda text: text.replace(b",0\n", b",10\n", 1)),
     "expected 1797 of 64 pixels and a label 0..9"),
    ("digits", "data/digits.csv.gz", lambda data: _gunzipped(data, lambda text: b"\n".join(
        line.split(b",", 1)[-1] for line in text.splitlines())), "1797 rows of 64 values, expected 1797 of 64 pixels"),
    ("digits", "data/digits.csv.gz", lambda data: _gunzipped(data, lambda text: text.replace(b"0", b"o", 1)),
     "could not convert"),
    ("vowels", "data/vowels.csv", lambda data: b"\n".join(line.rsplit(b",", 1)[0] for line in data.splitlines()),
     "258 rows of 11 features and 7 vowels, expected 258 of 12 and 7"),
    ("vowels", "data/vowels.csv", lambda data: data[:data.index(b"\n") + 1], "0 rows of 0 features and 0 vowels"),
], ids=["vowels cut", "vowels non-numeric", "vowels renamed column", "vowels one row", "vowels gone", "digits cut",
        "digits 3 values", "digits not gzip", "digits label 10", "digits 63 pixels", "digits non-numeric",
        "vowels 11 features", "vowels header only"])
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


def _shipped_samples(name: str) -> list[tuple[tuple[float, ...], str]]:
    """Every sample of a shipped file as (features, class name), read straight from the file, sorted."""
    if name == "digits":
        table = np.loadtxt(str(files("hil").joinpath("data", "digits.csv.gz")), delimiter=",")  # numpy gunzips
        return sorted((tuple(row[:-1]), str(int(row[-1]))) for row in table)
    with files("hil").joinpath("data", "vowels.csv").open() as handle:
        return sorted((tuple(float(value) for key, value in row.items() if key not in ("speaker", "vowel")),
                       row["vowel"]) for row in csv.DictReader(handle))


def _samples(x: torch.Tensor, y: torch.Tensor, class_names: tuple[str, ...]) -> list[tuple[tuple[float, ...], str]]:
    return [(tuple(row), class_names[label]) for row, label in zip(x.tolist(), y.tolist(), strict=True)]


@pytest.mark.parametrize("name", ["digits", "vowels"])
def test_train_and_test_together_are_the_shipped_samples_each_with_its_own_label(name: str) -> None:
    """No sample lost, doubled or moved to another class: labels index ``class_names``, features keep their columns."""
    data = load_dataset(name, seed=5)
    together = _samples(data.x_train, data.y_train, data.class_names) + _samples(data.x_test, data.y_test,
                                                                                   data.class_names)
    assert sorted(together) == _shipped_samples(name)
    assert int(torch.cat([data.y_train, data.y_test]).min()) == 0


def test_loading_digits_closes_the_shipped_file() -> None:
    """gzip.open does not close a file object it is given: the shipped file was left to the collector, which warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        load_dataset("digits", seed=0)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_digits_classes_are_named_by_their_digit() -> None:
    assert load_dataset("digits").class_names == tuple("0123456789")


@pytest.mark.parametrize("name", ["digits", "vowels"])
def test_features_are_float32_and_labels_int64(name: str) -> None:
    data = load_dataset(name)
    assert (data.x_train.dtype, data.x_test.dtype) == (torch.float32, torch.float32)
    assert (data.y_train.dtype, data.y_test.dtype) == (torch.int64, torch.int64)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1e-4])
def test_digits_hold_out_the_fraction_of_each_class_as_nearly_as_whole_samples_allow(fraction: float) -> None:
    """Each class's test samples are its share of the rounded total, rounded down or up; a seed draws other samples."""
    _, labels, _ = _digits()
    counts = np.bincount(labels)
    total = max(1, round(len(labels) * fraction))
    tests = []
    for seed in range(4):
        held = np.bincount(load_dataset("digits", seed=seed, test_fraction=fraction).y_test.numpy(), minlength=10)
        assert held.sum() == total and (np.abs(held - counts * total / len(labels)) < 1).all()
        tests.append(load_dataset("digits", seed=seed, test_fraction=fraction).x_test)
    assert fraction == 1e-4 or not torch.equal(tests[0], tests[1])


def test_vowels_hold_out_speakers_whose_vowels_are_balanced_as_the_whole_set_s() -> None:
    """A quarter of the 48 speakers holds a quarter of each vowel's 37 recordings (36 of uw), 9.25, to within one
    recording; the speakers differ from seed to seed."""
    labels = _vowels()[1]
    speaker_of = _speaker_of()
    held_speakers = []
    for seed in range(6):
        data = load_dataset("vowels", seed=seed, test_fraction=0.25)
        held = np.bincount(data.y_test.numpy(), minlength=7)
        assert (np.abs(held - np.bincount(labels) / 4) <= 1).all()
        held_speakers.append({speaker_of[tuple(row)] for row in data.x_test.tolist()})
    assert all(len(held) == 12 for held in held_speakers) and len({frozenset(h) for h in held_speakers}) == 6


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_test_fraction_outside_0_to_1_is_refused_by_its_field(fraction: float) -> None:
    with pytest.raises(ConfigError, match=f"test_fraction must be in \\(0, 1\\), got {fraction}") as caught:
        load_dataset("digits", test_fraction=fraction)
    assert caught.value.field == "dataset.test_fraction"


@pytest.mark.parametrize(("fraction", "speakers"), [(0.2, 10), (0.01, 1)])
def test_vowels_hold_out_the_nearest_whole_number_of_speakers_and_at_least_one(fraction: float,
                                                                              speakers: int) -> None:
    """48 speakers: 0.2 of them is 9.6, so 10 are held out; 0.01 is 0.48, still one."""
    speaker_of = _speaker_of()
    held_out = {speaker_of[tuple(row)] for row in load_dataset("vowels", test_fraction=fraction).x_test.tolist()}
    assert len(held_out) == speakers


@pytest.mark.parametrize(("settings", "field", "message"), [
    ({"name": "vowels", "test_fraction": 0.99}, "test_fraction",
     r"test_fraction 0\.99 holds out every sample of vowels; give a smaller one"),  # 47.5 of 48 speakers: all
    ({"name": "digits", "test_fraction": 0.99999}, "test_fraction",
     r"test_fraction 0\.99999 holds out every sample of digits"),
    ({"name": "digits", "limit": 0}, "limit", "limit must be at least 1 training sample, got 0"),
])
def test_a_split_that_leaves_no_training_sample_is_refused(settings, field: str, message: str) -> None:
    """Called directly (the protocol layer checks the rows it needs), these returned an empty training set."""
    with pytest.raises(ConfigError, match=f"^dataset.{field}: {message}") as caught:
        load_dataset(**settings)
    assert caught.value.field == f"dataset.{field}"


def test_a_tiny_test_fraction_still_holds_out_one_digit() -> None:
    assert len(load_dataset("digits", test_fraction=1e-4).y_test) == 1  # 0.18 samples, rounded up to one


def test_limit_keeps_a_seeded_choice_of_the_training_samples_in_their_order() -> None:
    """The limited set is drawn from the training set only (never the test set), not its first rows, the same for
    the same seed; a limit above the training set's size keeps it whole."""
    full = load_dataset("digits", seed=2)
    limited = load_dataset("digits", seed=2, limit=100)
    assert torch.equal(limited.x_test, full.x_test)
    rows = [tuple(row) for row in full.x_train.tolist()]
    positions = [rows.index(tuple(row)) for row in limited.x_train.tolist()]
    assert len(positions) == 100 and positions == sorted(positions) and positions != list(range(100))
    assert torch.equal(limited.y_train, full.y_train[positions])
    assert torch.equal(load_dataset("digits", seed=2, limit=100).x_train, limited.x_train)
    assert torch.equal(load_dataset("digits", seed=2, limit=10_000).x_train, full.x_train)


def test_unknown_data_set_and_idx_without_a_folder_name_their_fields() -> None:
    with pytest.raises(ConfigError, match="unknown data set 'cifar'; known: digits, vowels, idx") as caught:
        load_dataset("cifar")
    assert caught.value.field == "dataset.name"
    with pytest.raises(ConfigError, match="needs a path") as caught:
        load_dataset("idx")
    assert caught.value.field == "dataset.path"


def _idx_folder(folder, train_labels: np.ndarray, test_labels: np.ndarray, shape: tuple[int, int] = (28, 28)) -> None:
    """MNIST-format files in ``folder`` whose images are filled with ten times their label (a label readable from
    the image)."""
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = np.broadcast_to(10 * labels[:, None, None], (len(labels), *shape))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_idx_limit_is_a_seeded_choice_of_training_images_that_keep_their_labels(tmp_path) -> None:
    _idx_folder(tmp_path, np.arange(20) % 10, np.arange(6))
    limited = load_dataset("idx", path=tmp_path, limit=10, seed=1)
    assert torch.equal(limited.y_train * 10, limited.x_train[:, 0].long())
    assert torch.equal(load_dataset("idx", path=tmp_path, limit=10, seed=1).y_train, limited.y_train)
    assert not torch.equal(load_dataset("idx", path=tmp_path, limit=10, seed=2).y_train, limited.y_train)
    assert limited.x_train.dtype == limited.x_test.dtype == torch.float32
    assert limited.y_train.dtype == limited.y_test.dtype == torch.int64


def test_idx_classes_count_to_the_largest_label_of_either_split(tmp_path) -> None:
    _idx_folder(tmp_path, np.array([0, 1, 2, 5]), np.array([9, 3]))
    assert load_dataset("idx", path=tmp_path).class_names == tuple("0123456789")


def test_idx_pooling_crops_each_side_of_non_square_images_to_whole_blocks(tmp_path) -> None:
    """10×7 images pooled by 3: rows 0..8 and columns 0..5 make 3×2 blocks; pooled by 7, one block; by 8, none."""
    _idx_folder(tmp_path, np.arange(2), np.arange(2), shape=(10, 7))
    image = np.arange(70).reshape(10, 7)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.stack([image, image]))
    pooled = load_dataset("idx", path=tmp_path, pool=3).x_test[0]
    expected = [image[r:r + 3, c:c + 3].mean() for r in (0, 3, 6) for c in (0, 3)]
    torch.testing.assert_close(pooled, torch.tensor(expected, dtype=torch.float32))
    assert load_dataset("idx", path=tmp_path, pool=7).x_test[0].tolist() == [image[:7, :7].mean()]
    with pytest.raises(ConfigError, match="8 is larger than the 10×7 images") as caught:
        load_dataset("idx", path=tmp_path, pool=8)
    assert caught.value.field == "dataset.pool"


def test_a_missing_idx_file_is_named_with_both_names_it_may_have(tmp_path) -> None:
    _idx_folder(tmp_path, np.arange(2), np.arange(2))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError) as caught:
        load_dataset("idx", path=tmp_path)
    assert caught.value.detail == f"{tmp_path}: no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"
    assert caught.value.field == "dataset.path"


def test_an_idx_file_of_16_dimensions_loads_and_of_17_is_refused(tmp_path) -> None:
    path = tmp_path / "many"
    path.write_bytes(_idx_bytes(np.arange(2).reshape((1,) * 15 + (2,))))
    assert read_idx(path).shape == (1,) * 15 + (2,)
    path.write_bytes(_idx_bytes(np.arange(2).reshape((1,) * 16 + (2,))))
    with pytest.raises(ConfigError, match="announces 17 dimensions"):
        read_idx(path)


def test_an_idx_file_of_three_bytes_is_not_an_idx_file(tmp_path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ConfigError, match=r"is not an unsigned-byte IDX file \(magic 000008\)"):
        read_idx(path)


def test_minmax_encoder_maps_a_constant_feature_to_the_lower_bound() -> None:
    """A feature with no spread in training (digits' corner pixels are always 0) is not divided by zero."""
    x = torch.tensor([[0.0, 4.0], [2.0, 4.0]])
    torch.testing.assert_close(MinMaxEncoder(x, (0.0, 1.0))(torch.tensor([[1.0, 4.0]])), torch.tensor([[0.5, 0.0]]))


def test_standard_encoder_uses_each_training_feature_s_own_mean_and_spread() -> None:
    """Fitted on the training set: a test row is standardised by the training mean and (sample) standard deviation of
    its own column, and a constant column becomes 0, not NaN."""
    x_train = torch.tensor([[0.0, 100.0, 7.0], [2.0, 300.0, 7.0], [4.0, 500.0, 7.0]])
    encode = StandardEncoder(x_train)
    torch.testing.assert_close(encode(x_train), torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(encode(torch.tensor([[6.0, 100.0, 7.0]])), torch.tensor([[2.0, -1.0, 0.0]]))


def test_standard_encoder_encodes_a_feature_constant_in_training_as_0_whatever_a_test_row_holds() -> None:
    """Its std floored at 1e-6 made a digits pixel always 0 in training but 16 in a test image an input of 1.6e7: with
    ``limit: 30`` training images, 39 of the 359 test images had such inputs. Features of any unit are standardised
    (one in nA, std 1e-9, was divided by 1e-6), and rounding noise on a constant feature counts as constant."""
    x_train = torch.tensor([[0.0, 1e-9, 3.0], [0.0, 3e-9, 3.0 + 2.4e-7], [0.0, 5e-9, 3.0]])
    assert float(x_train[:, 2].std()) > 0  # one float32 step above 3 (3 + 1e-7 rounds to 3): rounding noise
    encode = StandardEncoder(x_train)
    torch.testing.assert_close(encode(torch.tensor([[16.0, 5e-9, 2.0]])), torch.tensor([[0.0, 1.0, 0.0]]))
    data = load_dataset("digits", seed=0, limit=30)
    assert float(StandardEncoder(data.x_train)(data.x_test).abs().max()) < 100


@pytest.mark.parametrize("rows", [0, 1])
def test_standard_encoder_refuses_too_few_rows_to_estimate_a_spread(rows: int) -> None:
    """One training row standardised every value by a NaN standard deviation (none of a single sample)."""
    with pytest.raises(ValueError, match=rf"^StandardEncoder needs at least 2 training rows to estimate each feature's "
                                         rf"spread, got {rows}$"):
        StandardEncoder(torch.ones(rows, 3))


def test_an_idx_folder_under_the_home_is_found_as_output_root_s_is(tmp_path, monkeypatch) -> None:
    """``path: ~/mnist`` was looked for in a folder named ``~`` of the working directory."""
    (tmp_path / "mnist").mkdir()
    _idx_folder(tmp_path / "mnist", np.arange(2), np.arange(2))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_dataset("idx", path="~/mnist").class_names == ("0", "1")


@pytest.mark.skipif(sys.platform == "win32", reason="Windows finds the home in USERPROFILE, not in the users' table")
def test_an_idx_folder_under_a_home_that_is_not_known_is_a_clear_error(monkeypatch) -> None:
    """A Python caller's ``~/mnist`` where HOME is unset and the system's table lacks the user (a container's
    --user) got pathlib's bare RuntimeError; it now gets the line a protocol's ``~/mnist`` gets."""
    import pwd

    def unknown_user(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    with pytest.raises(ConfigError) as caught:
        load_dataset("idx", path="~/mnist")
    assert caught.value.detail == ("dataset folder '~/mnist': ~ stands for your home folder, which is not known here "
                                   "(HOME is not set); set HOME, or give a path without ~")
    assert caught.value.field == "dataset.path"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_idx_path_that_is_no_folder_says_so_and_what_it_is_relative_to(tmp_path, monkeypatch, kind: str) -> None:
    """It said the folder had no train-images file, as if it existed; the path is the working directory's, not the
    protocol file's (as the lab's is)."""
    monkeypatch.chdir(tmp_path)
    if kind == "file":
        Path("mnist").write_text("")
    with pytest.raises(ConfigError) as caught:
        load_dataset("idx", path="mnist")
    what = "not found" if kind == "missing" else "is a file"
    assert caught.value.detail == (f"dataset folder 'mnist' {what} (relative to the working directory); name the "
                                   "folder of the MNIST-format files")
    assert caught.value.field == "dataset.path"


@pytest.mark.parametrize("path", ["~/mnist", "/no/such/mnist"])
def test_an_idx_path_that_is_not_relative_is_not_said_to_be_relative_to_the_working_directory(
        tmp_path, monkeypatch, path: str) -> None:
    """The note told the user of a home's or an absolute folder that it was looked for in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as caught:
        load_dataset("idx", path=path)
    assert caught.value.detail == (f"dataset folder {path!r} not found; name the folder of the MNIST-format files")
