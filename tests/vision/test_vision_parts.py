"""The vision workload's parts: ImageFolder trees and splits, decoding, augmentation, models, weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cudalab.vision import data as vdata
from cudalab.vision.models import ARCHS, FastNet, ImageClassifier, build_backbone, load_weights


def test_a_given_split_is_kept_and_a_plain_tree_is_split_by_class_from_a_seed(
    tiny: Path, tmp_path: Path
) -> None:
    given = vdata.open_image_folder(tiny)
    assert given.given_split and len(given.classes) == 10
    assert (len(given.train), len(given.val)) == (1000, 200)
    assert np.bincount(given.val.labels).tolist() == [20] * 10
    plain = tmp_path / "plain"
    shutil.copytree(tiny / "train", plain)
    a = vdata.open_image_folder(plain, val_fraction=0.2, seed=3)
    b = vdata.open_image_folder(plain, val_fraction=0.2, seed=3)
    c = vdata.open_image_folder(plain, val_fraction=0.2, seed=4)
    assert not a.given_split and a.val.files == b.val.files != c.val.files
    assert np.bincount(a.val.labels).tolist() == [20] * 10  # stratified: a fifth of every class
    assert not set(a.val.files) & set(a.train.files) and len(a.train) + len(a.val) == 1000


def test_trees_that_cannot_train_are_refused_by_name(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such folder"):
        vdata.open_image_folder(tmp_path / "none")
    one = tmp_path / "one" / "cat"
    one.mkdir(parents=True)
    shutil.copy(next((tiny / "train" / "cat").iterdir()), one)
    with pytest.raises(ValueError, match="two or more classes"):
        vdata.open_image_folder(tmp_path / "one")
    split = tmp_path / "split"
    shutil.copytree(tiny / "train" / "cat", split / "train" / "cat")
    shutil.copytree(tiny / "train" / "dog", split / "train" / "dog")
    shutil.copytree(tiny / "test" / "frog", split / "val" / "frog")
    with pytest.raises(ValueError, match="classes missing from train/: frog"):
        vdata.open_image_folder(split)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg: not a readable image"):
        vdata.read_image(bad)


def test_a_tar_of_a_tree_is_unpacked_once(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDALAB_CACHE", str(tmp_path))
    archive = shared_data / "vision" / "cifar10-tiny.tgz"
    first = vdata.open_image_folder(archive)
    assert first.root.is_relative_to(tmp_path) and len(first.train) == 1000
    marker = first.root / "marker"
    marker.write_text("x")
    assert vdata.open_image_folder(archive).root == first.root and marker.exists()  # not unpacked again
    with pytest.raises(ValueError, match="not a readable tar archive"):
        (tmp_path / "broken.tgz").write_bytes(b"not a tar")
        vdata.open_image_folder(tmp_path / "broken.tgz")


def test_decoding_gives_rgb_uint8_of_the_model_size_whatever_the_file(tiny: Path, tmp_path: Path) -> None:
    from PIL import Image

    src = next((tiny / "train" / "ship").iterdir())
    ref = vdata.read_image(src)
    assert ref.shape == (3, 32, 32) and ref.dtype == torch.uint8
    with Image.open(src) as im:
        im.convert("L").save(tmp_path / "grey.png")
        im.convert("RGBA").save(tmp_path / "alpha.png")
        im.save(tmp_path / "same.bmp")
        im.resize((64, 48)).save(tmp_path / "big.png")
    assert torch.equal(vdata.read_image(tmp_path / "same.bmp"), ref)  # BMP through Pillow, lossless
    grey = vdata.read_image(tmp_path / "grey.png")
    assert grey.shape == (3, 32, 32) and torch.equal(grey[0], grey[1])
    assert vdata.read_image(tmp_path / "alpha.png").shape == (3, 32, 32)
    assert vdata.fit_size(vdata.read_image(tmp_path / "big.png"), 32).shape == (3, 32, 32)


def test_crop_flip_shifts_each_image_within_the_pad_and_mirrors_about_half() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (400, 3, 16, 16), dtype=torch.uint8)
    out = vdata.crop_flip(images, 2, g)
    padded = F.pad(images.float(), (2,) * 4, mode="reflect").to(torch.uint8)
    flipped = 0
    for i in range(len(images)):
        windows = [padded[i, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirror = any(torch.equal(out[i], w.flip(-1)) for w in windows)
        assert plain or mirror, i
        flipped += int(mirror and not plain)
    assert 150 < flipped < 250  # a fair coin over 400 images (+-5 sigma)
    again = vdata.crop_flip(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again, out)  # the seed alone decides


def test_worker_batches_do_not_depend_on_the_number_of_workers(tiny: Path) -> None:
    split = vdata.open_image_folder(tiny).train
    small = vdata.Split(split.files[:24], split.labels[:24])
    ds = vdata.FileDataset(small, 24, train=True, seed=5)
    ds.epoch = 2
    order = list(range(23, -1, -1))
    alone = list(vdata.loader(ds, order, 8, workers=0, pin=False))
    pooled = list(vdata.loader(ds, order, 8, workers=2, pin=False))
    assert len(alone) == 3 and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(alone, pooled, strict=True)
    )
    ds.epoch = 3
    other = next(iter(vdata.loader(ds, order, 8, workers=0, pin=False)))
    assert not torch.equal(other[0], alone[0][0])  # another epoch, other crops


def test_fastnet_whitening_makes_the_patches_uncorrelated(tiny: Path) -> None:
    images = vdata.decode_all(vdata.open_image_folder(tiny).train.files[:500], 32).float() / 255
    mean, std = images.mean((0, 2, 3), keepdim=True), images.std((0, 2, 3), keepdim=True)
    images = (images - mean) / std  # as the classifier feeds it
    net = FastNet(10)
    net.init_whitening(images)
    with torch.no_grad():
        out = net.whiten(images)[:, :12]  # the +filters; the other 12 are their negatives
    cov = torch.cov(out.permute(0, 2, 3, 1).reshape(-1, 12).T)
    # unit variance along the strong directions (eps = 5e-4 damps the weakest, as in airbench)
    assert torch.allclose(cov.diagonal()[:6], torch.ones(6), atol=0.1)
    assert (cov.diagonal() <= 1.0 + 1e-3).all()
    off = cov - torch.diag(cov.diagonal())
    assert off.abs().max() < 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_maps_images_to_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(build_backbone(arch, 7, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), tta_flip=True)
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        out = model(x)
        plain = model.backbone((x - 0.5) / 0.25)
        mirror = model.backbone((x.flip(-1) - 0.5) / 0.25)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert torch.allclose(out, (plain + mirror) / 2, atol=1e-5)  # test-time flip averages the two


def test_a_users_weights_load_with_a_new_head_left_initialised(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_backbone("resnet18", 10, 32)
    torch.save(source.state_dict(), tmp_path / "r18.pt")
    model = ImageClassifier(build_backbone("resnet18", 4, 32), (0.0,) * 3, (1.0,) * 3)  # type: ignore[arg-type]
    skipped = load_weights(model, tmp_path / "r18.pt")
    assert skipped == ["backbone.fc.bias", "backbone.fc.weight"]
    assert torch.equal(model.backbone.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable PyTorch weights file"):
        load_weights(model, tmp_path / "junk.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_weights(model, tmp_path / "other.pt")
