"""Data sets for the experiments, and their encoding into a physical system's input range.

Built in: ``digits`` (scikit-learn's 8×8 handwritten digits, shipped in hil/data), ``vowels`` (Hillenbrand et
al. 1995 formants, shipped in hil/data, split by speaker) and ``idx`` (MNIST-format IDX files from a local
folder, optionally average-pooled). See hil/data/README.md for provenance. Splits are seeded and hold out each class
in proportion (digits: of its samples; vowels: as nearly as whole speakers allow).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from hil.config import expand_home
from hil.errors import ConfigError

DATASETS = ("digits", "vowels", "idx")


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into train and test: features float32, labels int64. ``files``: the files
    read from the protocol's folder (an IDX set's, by name) and the SHA-256 of each as stored; none for the shipped
    sets, which are part of hil as its code is."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2, path: str | Path | None = None,
                 pool: int = 1, limit: int | None = None) -> Dataset:
    """Load a data set and split it (``test_fraction`` of the samples, or of the speakers for vowels; an ``idx``
    set is split as its files are, train-* and t10k-*, and ``test_fraction`` does not apply).

    ``path`` is the folder of the IDX files for ``idx`` (relative to the working directory; ``~`` is the home);
    ``pool`` average-pools IDX images by that factor;
    ``limit`` keeps at most that many training samples (a seeded choice).
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}", field="dataset.test_fraction")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 training sample, got {limit}", field="dataset.limit")
    rng = np.random.default_rng(seed)
    if name == "digits":
        x, y, classes = _digits()
        test = _stratified_split(y, test_fraction, rng)
    elif name == "vowels":
        x, y, classes, speakers = _vowels()
        test = _group_split(speakers, y, test_fraction, rng)
    elif name == "idx":
        if path is None:
            raise ConfigError("the idx data set needs a path to a folder of MNIST-format files",
                              field="dataset.path")
        try:
            folder = Path(expand_home(str(path)))  # ~/mnist: the home's, as output.root is
        except ValueError as error:  # no home known: pathlib's bare "Could not determine home directory"
            raise ConfigError(f"dataset folder {str(path)!r}: {error}", field="dataset.path") from None
        if not folder.is_dir():
            relative = "" if folder.is_absolute() else " (relative to the working directory)"
            raise ConfigError(f"dataset folder {str(path)!r} {'is a file' if folder.exists() else 'not found'}"
                              f"{relative}; name the folder of the MNIST-format files", field="dataset.path")
        return _idx(folder, pool, limit, rng)
    else:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}", field="dataset.name")
    train = np.flatnonzero(~test)
    if len(train) == 0:
        raise ConfigError(f"test_fraction {test_fraction:g} holds out every sample of {name}; give a smaller one",
                          field="dataset.test_fraction")
    if limit is not None:
        train = np.sort(rng.choice(train, size=min(limit, len(train)), replace=False))
    return Dataset(name, torch.as_tensor(x[train], dtype=torch.float32), torch.as_tensor(y[train]),
                   torch.as_tensor(x[test], dtype=torch.float32), torch.as_tensor(y[test]), classes)


def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out ``fraction`` of the samples (rounded, at least one), as nearly that fraction of each class as whole
    samples allow (the largest remainders round up, ties drawn), each class's drawn at random. A plain random draw
    held out 20 of the 182 fives of digits and 48 of the 177 twos (seed 0), where a fifth is 36 and 35."""
    n = len(labels)
    size = max(1, round(n * fraction))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * (size / n)
    quota = np.floor(share).astype(np.int64)
    order = np.lexsort((rng.random(len(classes)), quota - share))  # largest remainder first, ties at random
    quota[order[:size - quota.sum()]] += 1
    test = np.zeros(n, dtype=bool)
    for label, count in zip(classes, np.minimum(quota, counts), strict=True):
        test[rng.choice(np.flatnonzero(labels == label), size=count, replace=False)] = True
    return test


#: How many seeded draws of the groups to hold out `_group_split` chooses the most balanced of.
GROUP_SPLIT_DRAWS = 1000


def _group_split(groups: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out whole groups (e.g. speakers), ``fraction`` of them (rounded, at least one), the draw of them (of
    `GROUP_SPLIT_DRAWS`) whose samples of each class are nearest in number to that fraction of the class's samples:
    a group holds some classes only (a speaker 3 to 7 of the 7 vowels), and a plain draw held out 5 of one vowel and
    11 of another (seed 4)."""
    unique, group_of = np.unique(groups, return_inverse=True)
    classes, label_of = np.unique(labels, return_inverse=True)
    size = max(1, round(len(unique) * fraction))
    per_group = np.zeros((len(unique), len(classes)))
    np.add.at(per_group, (group_of, label_of), 1)
    wanted = per_group.sum(axis=0) * size / len(unique)
    draws = [rng.choice(len(unique), size=size, replace=False) for _ in range(GROUP_SPLIT_DRAWS)]
    best = min(draws, key=lambda held: float(np.abs(per_group[held].sum(axis=0) - wanted).sum()))
    return np.isin(group_of, best)


#: The shipped data sets' sizes (hil/data/README.md): rows, features, classes.
DIGITS_SHAPE, VOWELS_SHAPE = (1797, 64, 10), (258, 12, 7)


def _shipped_damaged(relative: str, reason: str) -> ConfigError:
    return ConfigError(f"{files('hil').joinpath(relative)}: the {Path(relative).name} data set shipped with hil is "
                       f"missing or damaged ({reason}); reinstall hil", field="dataset.name")


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    relative = "data/digits.csv.gz"
    try:
        with files("hil").joinpath(relative).open("rb") as raw, gzip.open(raw, "rt") as handle:  # both closed
            table = np.loadtxt(handle, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as error:
        raise _shipped_damaged(relative, getattr(error, "strerror", None) or str(error) or type(error).__name__) \
            from None
    rows, features, classes = DIGITS_SHAPE
    labels = table[:, -1]
    if table.shape != (rows, features + 1) or not np.isin(labels, np.arange(classes)).all():
        raise _shipped_damaged(relative, f"{table.shape[0]} rows of {table.shape[1]} values, expected {rows} of "
                                         f"{features} pixels and a label 0..{classes - 1}")
    return table[:, :-1], labels.astype(np.int64), tuple(str(d) for d in range(classes))


def _vowels() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    relative = "data/vowels.csv"
    try:
        with files("hil").joinpath(relative).open("r", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        features = [key for key in (rows[0] if rows else {}) if key not in ("speaker", "vowel")]
        x = np.array([[float(row[key]) for key in features] for row in rows])
        vowels, speakers = [row["vowel"] for row in rows], [row["speaker"] for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, TypeError, ValueError) as error:  # a column renamed: not numeric
        reason = getattr(error, "strerror", None) or "a row with a missing or non-numeric value"
        raise _shipped_damaged(relative, reason) from None
    classes = tuple(sorted(set(vowels)))
    if (x.shape[0], x.shape[1] if x.ndim == 2 else 0, len(classes)) != VOWELS_SHAPE:
        raise _shipped_damaged(relative, f"{len(rows)} rows of {len(features)} features and {len(classes)} vowels, "
                                         "expected {} of {} and {}".format(*VOWELS_SHAPE))
    y = np.array([classes.index(vowel) for vowel in vowels], dtype=np.int64)
    return x, y, classes, np.array(speakers)


#: The most dimensions an IDX header may announce (numpy's arrays have at most 64; MNIST's have 1 or 3).
IDX_MAX_DIMS = 16


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a numpy array, e.g. MNIST's images (N×28×28 uint8) or labels (N).

    Any file that is not a whole unsigned-byte IDX file (damaged gzip, short header, a header whose shape does not
    match the data) is a `ConfigError` naming it; the header's shape is only checked against the bytes read, never
    used to allocate."""
    return read_idx_hashed(path)[0]


class _Hashing:
    """A binary file read through this, its bytes hashed (SHA-256) as they are read."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.sha256 = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.sha256.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        """The digest of the whole file: what the reader left unread (nothing, after a whole gzip stream) first."""
        while self.read(1 << 20):
            pass
        return self.sha256.hexdigest()


def read_idx_hashed(path: Path) -> tuple[np.ndarray, str]:
    """`read_idx`, and the SHA-256 (hex) of the file as stored (a ``.gz`` file's compressed bytes, as ``sha256sum``
    gives it), hashed as it is read: the digest is of the very bytes the array came from, the file read once."""
    try:
        with path.open("rb") as raw:
            hashed = _Hashing(raw)
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=hashed, mode="rb") as handle:
                    data = handle.read()
            else:
                data = hashed.read()
            digest = hashed.hexdigest()
    except (OSError, EOFError, zlib.error) as error:  # a damaged or cut-off gzip stream raises the last two
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ConfigError(f"cannot read IDX file {path} ({reason}); check the file, or download it again") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}); give MNIST-format "
                          "files (magic 00000801 or 00000803)")
    n_dims = data[3]
    if not 1 <= n_dims <= IDX_MAX_DIMS:
        raise ConfigError(f"{path}: the IDX header announces {n_dims} dimensions (1 to {IDX_MAX_DIMS} expected); "
                          "the file is damaged: download it again")
    if len(data) < 4 + 4 * n_dims:
        raise ConfigError(f"{path}: the IDX header is cut off ({len(data)} bytes, {4 + 4 * n_dims} needed); the "
                          "file is truncated: download it again")
    shape = struct.unpack(f">{n_dims}I", data[4:4 + 4 * n_dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims)
    if body.size != math.prod(shape):  # Python integers: a lying header cannot overflow into a match
        raise ConfigError(f"{path}: header announces shape {shape}, file holds {body.size} values; the file is "
                          "truncated or damaged: download it again")
    return body.reshape(shape), digest


#: The names of the files an IDX set reads from its folder, each plain or gzipped (MNIST's names).
IDX_FILES = tuple(f"{prefix}-{kind}{suffix}" for prefix in ("train", "t10k")
                  for kind in ("images-idx3-ubyte", "labels-idx1-ubyte") for suffix in ("", ".gz"))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"{folder}: no {stem} or {stem}.gz", field="dataset.path")


def _idx(folder: Path, pool: int, limit: int | None, rng: np.random.Generator) -> Dataset:
    parts, digests = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
        images, digests[images_path.name] = read_idx_hashed(images_path)
        labels, digests[labels_path.name] = read_idx_hashed(labels_path)
        if images.ndim != 3:
            raise ConfigError(f"{images_path}: images of shape {images.shape}; an images file holds N×rows×columns "
                              "(idx3): give MNIST-format files", field="dataset.path")
        if labels.ndim != 1:
            raise ConfigError(f"{labels_path}: labels of shape {labels.shape}; a labels file holds N labels (idx1): "
                              "give MNIST-format files", field="dataset.path")
        if len(images) == 0:
            raise ConfigError(f"{images_path} holds no images; give a file with at least one", field="dataset.path")
        if len(images) != len(labels):
            raise ConfigError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; "
                              "give each images file with its own labels file", field="dataset.path")
        n, rows, cols = images.shape
        if split == "test" and (rows, cols) != parts["train"][2]:
            raise ConfigError(f"{images_path} holds {rows}×{cols} images, the training set "
                              f"{parts['train'][2][0]}×{parts['train'][2][1]}; give the test set of the same data",
                              field="dataset.path")
        if pool > min(rows, cols):
            raise ConfigError(f"{pool} is larger than the {rows}×{cols} images of {images_path}, which would leave no "
                              f"features; pool by at most {min(rows, cols)}", field="dataset.pool")
        pixels = images.astype(np.float64)
        if pool > 1:
            pixels = pixels[:, : rows // pool * pool, : cols // pool * pool]
            pixels = pixels.reshape(n, rows // pool, pool, cols // pool, pool).mean(axis=(2, 4))
        parts[split] = (pixels.reshape(n, -1), labels.astype(np.int64), (rows, cols))
    x_train, y_train, _ = parts["train"]
    x_test, y_test, _ = parts["test"]
    if limit is not None and limit < len(y_train):
        keep = np.sort(rng.choice(len(y_train), size=limit, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    classes = tuple(str(c) for c in range(int(max(y_train.max(), y_test.max())) + 1))
    return Dataset("idx", torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train),
                   torch.as_tensor(x_test, dtype=torch.float32), torch.as_tensor(y_test), classes, digests)


class MinMaxEncoder:
    """Maps each feature linearly from its training range onto ``bounds`` (e.g. a system's input range).

    Fitted on the training set only; test values beyond the training range are clipped into ``bounds``.
    """

    def __init__(self, x_train: torch.Tensor, bounds: tuple[float, float]):
        self.low = x_train.min(dim=0).values
        span = x_train.max(dim=0).values - self.low
        self.span = torch.where(span > 0, span, torch.ones_like(span))
        self.bounds = bounds

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        unit = ((x - self.low) / self.span).clamp(0.0, 1.0)
        low, high = self.bounds
        # rounding to float32 may step past a bound that float32 cannot hold exactly (0.1..0.7 gave 0.70000005)
        return (low + (high - low) * unit).clamp(_float32_within(low, high, low), _float32_within(low, high, high))


def _float32_within(low: float, high: float, value: float) -> float:
    """The float32 nearest ``value`` that lies within ``low..high`` (as the system's bounds check compares)."""
    nearest = torch.tensor(value, dtype=torch.float32)
    inward = torch.tensor(high if value == low else low, dtype=torch.float32)
    while not low <= float(nearest) <= high:
        nearest = torch.nextafter(nearest, inward)
    return float(nearest)


#: A feature whose standard deviation over the training set is at most this fraction of its largest magnitude there is
#: constant but for rounding (float32 resolves 6e-8 of a value).
CONSTANT_SPREAD = 1e-6


class StandardEncoder:
    """Standardises each feature by its training mean and standard deviation (for a digital first layer); fitted on
    at least two rows, as a single sample has no spread. A feature constant over the training set (`CONSTANT_SPREAD`)
    is encoded as 0: the model learnt nothing from it, and its std floored at 1e-6 made a test value of 16 where
    training saw only 0 (a corner pixel of digits) an input of 1.6e7."""

    def __init__(self, x_train: torch.Tensor):
        if len(x_train) < 2:
            raise ValueError(f"StandardEncoder needs at least 2 training rows to estimate each feature's spread, got "
                             f"{len(x_train)}")
        self.mean = x_train.mean(dim=0)
        spread = x_train.std(dim=0)
        constant = spread <= CONSTANT_SPREAD * x_train.abs().amax(dim=0)
        self.std = torch.where(constant, torch.inf, spread)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
