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
    # the same recordings of a held-out speaker never appear in training
    test_rows = {tuple(row.tolist()) for row in data.x_test}
    assert not test_rows & {tuple(row.tolist()) for row in data.x_train}
    assert 0.15 < len(data.y_test) / 258 < 0.35


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
