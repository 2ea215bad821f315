"""Labelled images from an ImageFolder tree: listing, splits, decoding, augmentation.

An ImageFolder tree is ``<root>/<class>/<image>``; a root holding ``train/`` and ``val/`` (or
``test/``) trees gives its own split, any other tree is split by a seed (stratified, a fraction per
class held out). A ``.tar``/``.tar.gz``/``.tgz`` of such a tree is unpacked once into a cache folder
(``$CUDALAB_CACHE``, else ``~/.cache/cudalab``) and used from there.

Two ways to feed a model, chosen by image size:

- ``memory`` (images of at most 64 pixels, such as CIFAR's 32 x 32): every image is decoded once
  (Pillow's libjpeg-turbo, about 15,000 CIFAR images/s on one core) into one uint8
  tensor, and each batch is augmented on the training device (random crop from a reflect-padded
  image, horizontal flip) with a generator seeded by (seed, epoch, batch). Decoding per epoch would
  cap a GPU at the CPU's decode rate (a few 10,000 images/s on two cores, where the fast recipe
  trains at several 100,000 on an H100); this way the GPU never waits for the CPU.
- ``workers`` (larger images): DataLoader workers decode and augment with torchvision v2 transforms
  (random resized crop and flip for training; resize and centre crop for evaluation), pinned memory
  and non-blocking copies. Each sample's randomness is seeded by (seed, epoch, index), so an epoch's
  batches do not depend on the number of workers and a resumed run sees the same ones.

Every image becomes 3 x S x S uint8 (greyscale and alpha converted to RGB); normalisation belongs to
the model (:class:`cudalab.vision.models.ImageClassifier`), so an exported model takes images in
[0, 1] and nothing else has to remember the mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff")
SPLIT_NAMES = (("train", "val"), ("train", "test"))
MEMORY_MAX_SIZE = 64
"""Images of at most this many pixels a side are decoded once into memory."""


@dataclass(frozen=True, slots=True)
class Split:
    """The files of one split with their class indices."""

    files: tuple[Path, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True, slots=True)
class ImageFolder:
    """A training and a validation split over one list of class names."""

    root: Path
    classes: tuple[str, ...]
    train: Split
    val: Split
    given_split: bool
    """True when the tree had its own train/val (or train/test) folders."""


def cache_root() -> Path:
    return Path(os.environ.get("CUDALAB_CACHE") or Path.home() / ".cache" / "cudalab")


def unpack(archive: Path) -> Path:
    """The folder an archive of an ImageFolder tree unpacks to (unpacked once, atomically)."""
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = archive.name.split(".")[0]
    target = cache_root() / "vision" / f"{stem}-{key}"
    if target.is_dir():
        return _single_child(target)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{archive}: not a readable tar archive ({exc})") from None
    os.replace(tmp, target)
    return _single_child(target)


def _single_child(folder: Path) -> Path:
    """An archive of one top folder unpacks to that folder."""
    children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return children[0] if len(children) == 1 and children[0].is_dir() else folder


def _scan(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out: dict[str, list[Path]] = {}
    for c in classes:
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if files:
            out[c] = files
    return out


def open_image_folder(path: str | Path, *, val_fraction: float = 0.1, seed: int = 0) -> ImageFolder:
    """Read an ImageFolder tree (or an archive of one); ``ValueError`` naming the fault otherwise."""
    root = Path(path)
    if root.is_file() and root.name.endswith((".tar", ".tar.gz", ".tgz")):
        root = unpack(root)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder (give an ImageFolder tree: <root>/<class>/<image>)")
    for train_name, val_name in SPLIT_NAMES:
        if (root / train_name).is_dir() and (root / val_name).is_dir():
            train, val = _scan(root / train_name), _scan(root / val_name)
            if len(train) < 2:
                raise ValueError(
                    f"{root / train_name}: needs images of two or more classes, found {len(train)}"
                )
            extra = sorted(set(val) - set(train))
            if extra:
                raise ValueError(f"{root / val_name}: classes missing from {train_name}/: {', '.join(extra)}")
            classes = tuple(train)
            index = {c: i for i, c in enumerate(classes)}
            return ImageFolder(
                root,
                classes,
                _split({c: train[c] for c in classes}, index),
                _split(val, index),
                given_split=True,
            )
    tree = _scan(root)
    if len(tree) < 2:
        raise ValueError(
            f"{root}: needs an ImageFolder tree with images of two or more classes "
            f"(<root>/<class>/<image> or <root>/train|val/<class>/<image>), found {len(tree)}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    classes = tuple(tree)
    index = {c: i for i, c in enumerate(classes)}
    rng = np.random.default_rng([seed, 0x1A6E])
    train_files: dict[str, list[Path]] = {}
    val_files: dict[str, list[Path]] = {}
    for c, files in tree.items():
        order = rng.permutation(len(files))
        n_val = max(1, round(val_fraction * len(files))) if len(files) > 1 else 0
        val_files[c] = [files[i] for i in sorted(order[:n_val])]
        train_files[c] = [files[i] for i in sorted(order[n_val:])]
    return ImageFolder(root, classes, _split(train_files, index), _split(val_files, index), given_split=False)


def _split(tree: dict[str, list[Path]], index: dict[str, int]) -> Split:
    files = [f for c in tree for f in tree[c]]
    labels = np.array([index[c] for c in tree for _ in tree[c]], dtype=np.int64)
    return Split(tuple(files), labels)


# -- decoding -------------------------------------------------------------------------------------


def decode(data: bytes, name: str | Path) -> torch.Tensor:
    """An encoded image as 3 x H x W uint8 RGB; ``ValueError`` naming the file when it cannot be read.

    Pillow decodes (libjpeg-turbo for JPEG; about 15,000 CIFAR images/s on one core), the decoder the
    server uses too, so a served image becomes the same pixels it would have in training.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_image(path: Path) -> torch.Tensor:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    return decode(raw, path)


def fit_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased) and crop the centre square."""
    from torchvision.transforms.v2 import functional as TF  # noqa: N812

    h, w = image.shape[-2:]
    if (h, w) != (size, size):
        image = TF.resize(image, size, antialias=True)
        image = TF.center_crop(image, [size, size])
    return image


def decode_all(files: Sequence[Path], size: int) -> torch.Tensor:
    """Every file decoded to 3 x size x size uint8, stacked (the ``memory`` way), by a thread per
    usable core up to 8 (Pillow decodes with the GIL released)."""
    from concurrent.futures import ThreadPoolExecutor

    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)

    def fill(lo: int) -> None:
        for i in range(lo, min(lo + 256, len(files))):
            out[i] = fit_size(read_image(files[i]), size)

    threads = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill, range(0, len(files), 256)))
    return out


def probe_size(files: Sequence[Path]) -> int:
    """The model input size a tree suggests: its first image's side when square and small, else 224."""
    h, w = read_image(files[0]).shape[-2:]
    return int(h) if h == w and h <= MEMORY_MAX_SIZE else 224


# -- the memory way: augmentation on the device ------------------------------------------------------


def crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Random crops of the reflect-padded batch (shifts of up to ``pad`` pixels) and random flips.

    ``images`` is N x C x S x S on any device; the random draws come from ``generator`` (on the CPU)
    so a batch's augmentation depends on the seed alone, not on the device.
    """
    n, _, h, w = images.shape
    if pad:
        padded = F.pad(images.float() if images.dtype == torch.uint8 else images, (pad,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device)[None, :])[:, None, None, :]
        batch_idx = torch.arange(n, device=images.device)[:, None, None, None]
        chan = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        images = padded[batch_idx, chan, rows, cols].to(images.dtype)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


# -- the workers way -------------------------------------------------------------------------------


class FileDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Decode and transform one file per item; seeded per (seed, epoch, index) when training."""

    def __init__(self, split: Split, size: int, *, train: bool, seed: int = 0) -> None:
        from torchvision.transforms import v2

        self.split, self.seed, self.epoch, self.train = split, seed, 0, train
        if train:
            self.transform = v2.Compose(
                [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
            )
        else:
            self.transform = v2.Compose([v2.Resize(round(size * 8 / 7), antialias=True), v2.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.split.files[i])
        if self.train:
            torch.manual_seed(hash((self.seed, self.epoch, i)) & 0x7FFF_FFFF_FFFF_FFFF)
        return self.transform(image), int(self.split.labels[i])


def loader(
    dataset: FileDataset, order: Sequence[int], batch_size: int, workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``dataset`` in ``order`` (a list of indices), decoded by ``workers`` processes."""
    batches = [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]
    dl = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    yield from dl


__all__ = [
    "EXTENSIONS",
    "FileDataset",
    "ImageFolder",
    "Split",
    "crop_flip",
    "decode",
    "decode_all",
    "fit_size",
    "loader",
    "open_image_folder",
    "probe_size",
    "read_image",
]
