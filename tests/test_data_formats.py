"""CIFAR-10, CelebA and MNIST readers on tiny datasets written in the exact real formats."""

from __future__ import annotations

import inspect
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fakedata import celeba_pattern, write_celeba, write_cifar10, write_idx, write_mnist
from PIL import Image

from ncsn.data.base import DataError
from ncsn.data.celeba import CelebaDataModule
from ncsn.data.cifar10 import Cifar10DataModule
from ncsn.data.mnist import MnistDataModule

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def cifar(root, **kw) -> Cifar10DataModule:
    args = dict(root=root, batch_size=4, num_workers=0, random_flip=False, dequantize=False)
    return Cifar10DataModule(**{**args, **kw})


def celeba(root, **kw) -> CelebaDataModule:
    args = dict(root=root, image_size=32, batch_size=2, num_workers=0, random_flip=False, dequantize=False)
    return CelebaDataModule(**{**args, **kw})


def mnist(root, **kw) -> MnistDataModule:
    args = dict(root=root, batch_size=4, num_workers=0, dequantize=False)
    return MnistDataModule(**{**args, **kw})


def stack(dataset):
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.stack(ys)


def as_float(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8).float() / 255


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "name, cls", [("cifar10", Cifar10DataModule), ("celeba", CelebaDataModule), ("mnist", MnistDataModule)]
)
def test_config_lists_every_constructor_argument_with_its_default(name, cls):
    conf = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    assert conf.pop("_target_") == f"{cls.__module__}.{cls.__name__}"
    params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    # None = the class's own default (FileImageDataModule)
    per_class = {"image_size": cls.DEFAULT_SIZE, "channels": cls.CHANNELS, "random_flip": cls.DEFAULT_FLIP}
    params.update({k: v for k, v in per_class.items() if params[k] is None})
    assert set(conf) == set(params)
    assert conf.pop("root") == "${paths.data_dir}"
    assert conf == {k: v for k, v in params.items() if k != "root"}
    for line in (CONF / f"{name}.yaml").read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("_target_"):
            assert "#" in line, f"{name}.yaml: key without a comment: {line}"


@pytest.mark.parametrize(
    "make, kw, key",
    [
        (cifar, dict(image_size=64), "data.image_size=64: CIFAR-10 images are 32x32"),
        (cifar, dict(channels=1), "data.channels=1: CIFAR-10"),
        (cifar, dict(val_split="valid"), "data.val_split='valid'"),
        (celeba, dict(image_size=0), "data.image_size=0: CelebA"),
        (celeba, dict(channels=1), "data.channels=1: CelebA"),
        (celeba, dict(val_split="train"), "data.val_split='train'"),
        (mnist, dict(image_size=-1), "data.image_size=-1: MNIST"),
        (mnist, dict(channels=3), "data.channels=3: MNIST images have 1 channel"),
    ],
)
def test_wrong_config_is_caught_at_construction(tmp_path, make, kw, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(")):
        make(tmp_path, **kw)


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_round_trip(tmp_path, bytes_keys):
    written = write_cifar10(tmp_path, per_batch=2, n_test=3, bytes_keys=bytes_keys)
    dm = cifar(tmp_path)
    dm.check()
    dm.setup("fit")
    for split, ds in (("train", dm.train_set), ("test", dm.val_set)):
        x, y = stack(ds)
        assert x.shape == (len(written[split][0]), 3, 32, 32) and x.dtype == torch.float32
        assert torch.equal(x, as_float(written[split][0]))
        assert torch.equal(y, torch.from_numpy(written[split][1])) and y.dtype == torch.long
    assert (len(dm.train_set), len(dm.val_set)) == (10, 3)
    assert dm.data_shape == (3, 32, 32) and dm.channels == 3


def test_cifar10_training_augmentation_only_on_train_batches(tmp_path):
    written = write_cifar10(tmp_path, per_batch=2, n_test=3)
    originals = as_float(written["train"][0])
    torch.manual_seed(0)
    dm = cifar(tmp_path, random_flip=True, dequantize=False, batch_size=5)
    dm.setup("fit")
    flipped = 0
    for _ in range(3):
        for x, _ in dm.train_dataloader():
            for img in x:
                same = [torch.equal(img, o) for o in originals]
                mirrored = [torch.equal(img, o.flip(-1)) for o in originals]
                assert any(same) or any(mirrored)
                flipped += any(mirrored) and not any(same)
    assert flipped > 0
    dm = cifar(tmp_path, random_flip=True, dequantize=True)
    dm.setup("fit")
    x = torch.cat([b[0] for b in dm.val_dataloader()])
    assert torch.equal(x, as_float(written["test"][0]))


def test_cifar10_dequantization_stays_in_unit_interval_within_one_level(tmp_path):
    written = write_cifar10(tmp_path, per_batch=2, n_test=1)
    dm = cifar(tmp_path, random_flip=False, dequantize=True, batch_size=10)
    dm.setup("fit")
    ((x, _),) = list(dm.train_dataloader())
    originals = as_float(written["train"][0])
    for img in x:  # shuffled: each image is within one level of exactly one original, per pixel
        assert ((originals - img).abs().flatten(1).amax(1) < 1 / 256).sum() == 1
    assert x.min() >= 0 and x.max() < 1
    assert not torch.equal(x, x.mul(255).round().div(255))  # actually noisy


def test_cifar10_iter_unaugmented_is_deterministic(tmp_path):
    written = write_cifar10(tmp_path, per_batch=2, n_test=3)
    dm = cifar(tmp_path, random_flip=True, dequantize=True)
    a = torch.cat(list(dm.iter_unaugmented("train", batch_size=4)))
    b = torch.cat(list(dm.iter_unaugmented("train", batch_size=3)))
    assert torch.equal(a, b) and torch.equal(a, as_float(written["train"][0]))
    assert torch.equal(torch.cat(list(dm.iter_unaugmented("test", 5))), as_float(written["test"][0]))


def test_cifar10_missing_root_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="^CIFAR-10 data not found") as e:
        cifar(tmp_path / "nowhere").check()
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1" in msg and "data.download=true" in msg and "data.root=" in msg
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="^CIFAR-10 data not found.*data_batch_4"):
        cifar(tmp_path).check()
    with pytest.raises(DataError, match="^CIFAR-10 data not found.*data_batch_4"):
        cifar(tmp_path).setup("fit")
    cifar(tmp_path).load_split("test")  # the test split alone is still readable


@pytest.mark.parametrize(
    "damage, in_check", [("truncate", True), ("garbage", False), ("shape", False), ("dtype", False), ("keys", False)]
)
def test_cifar10_corrupt_file_is_named(tmp_path, damage, in_check):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all." + b".")
    else:
        import pickle

        entry = {"labels": [1, 2], "data": np.zeros((2, 3072), np.uint8)}
        if damage == "shape":
            entry["data"] = np.zeros((2, 3000), np.uint8)
        elif damage == "dtype":
            entry["data"] = np.zeros((2, 3072), np.float32)
        else:
            entry = {"images": entry["data"]}
        path.write_bytes(pickle.dumps(entry, protocol=2))
    dm = cifar(tmp_path)
    if in_check:
        with pytest.raises(DataError, match=f"^CIFAR-10 file is corrupt: {path}"):
            dm.check()
    with pytest.raises(DataError, match=f"^CIFAR-10 file is corrupt: {path}"):
        dm.setup("fit")


def test_cifar10_unpickler_refuses_foreign_objects(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    import pickle

    path.write_bytes(pickle.dumps({"data": Path("x"), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing global"):
        cifar(tmp_path).load_split("test")


def test_cifar10_download_uses_torchvision_only_when_missing(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake(root, train, download):  # stands in for the network: writes the real format
        calls.append((root, train, download))
        write_cifar10(root)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake)
    dm = cifar(tmp_path, download=True)
    dm.check()  # absent but download=true: prepare_data will fetch
    with pytest.raises(DataError, match="prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    dm.prepare_data()  # present now: no second fetch
    assert calls == [(str(tmp_path), False, True)]
    dm.check()
    dm.setup("fit")

    def offline(root, train, download):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="^CIFAR-10 download failed.*cifar-10-python.tar.gz"):
        cifar(tmp_path / "empty", download=True).prepare_data()


# ----------------------------------------------------------------------------- CelebA


def test_celeba_splits_shapes_and_labels(tmp_path):
    names = write_celeba(tmp_path, counts={"train": 3, "valid": 2, "test": 1})
    for val_split, n_val in (("valid", 2), ("test", 1)):
        dm = celeba(tmp_path, val_split=val_split)
        dm.check()
        dm.setup("fit")
        assert (len(dm.train_set), len(dm.val_set)) == (3, n_val)
        assert dm.train_set.names == names["train"] and dm.val_set.names == names[val_split]
    x, y = stack(dm.train_set)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert (y == -1).all() and y.dtype == torch.long
    assert dm.data_shape == (3, 32, 32)


def test_celeba_matches_the_papers_transform_exactly(tmp_path):
    from torchvision import transforms

    write_celeba(tmp_path, counts={"train": 2})
    paper = transforms.Compose([transforms.CenterCrop(140), transforms.Resize(64), transforms.ToTensor()])
    dm = celeba(tmp_path, image_size=64)
    ds = dm.load_split("train")
    for i, name in enumerate(ds.names):
        with Image.open(tmp_path / "celeba" / "img_align_celeba" / name) as im:
            expected = paper(im.convert("RGB"))
        assert torch.equal(ds[i][0], expected)


@pytest.mark.parametrize("size", [32, 64])
def test_celeba_center_crop_removes_the_border(tmp_path, size):
    write_celeba(tmp_path, counts={"train": 1}, pattern=True)
    x = celeba(tmp_path, image_size=size).load_split("train")[0][0]
    assert x.shape == (3, size, size)
    h = size // 2
    quads = {"blue": x[:, :h, :h], "green": x[:, :h, h:], "white": x[:, h:, :h], "black": x[:, h:, h:]}
    want = {"blue": (0, 0, 1), "green": (0, 1, 0), "white": (1, 1, 1), "black": (0, 0, 0)}
    for name, q in quads.items():
        core = q[:, 2:-2, 2:-2]  # away from the quadrant edges, JPEG and resampling are flat
        assert (core - torch.tensor(want[name]).view(3, 1, 1)).abs().max() < 0.05, name
    # the red border (outside the 140 crop) must not reach the outer ring of the output
    ring = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    redness = ring[0] - ring[1:].max(0).values
    assert redness.max() < 0.12
    # sanity: the synthetic image really has the border where the crop must cut
    px = celeba_pattern()
    assert tuple(px[0, 0]) == (255, 0, 0) and tuple(px[39, 19]) == (0, 0, 255) and tuple(px[38, 19]) == (255, 0, 0)


def test_celeba_missing_pieces_are_named(tmp_path):
    with pytest.raises(DataError, match="^CelebA data not found") as e:
        celeba(tmp_path).check()
    assert str(tmp_path / "celeba" / "img_align_celeba") in str(e.value)
    assert str(tmp_path / "celeba" / "list_eval_partition.txt") in str(e.value)
    assert "data.download=true" in str(e.value) and "data.root=" in str(e.value)
    write_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="^CelebA data not found: 1 images listed.*000002.jpg"):
        celeba(tmp_path).check()
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="^CelebA data not found: looked for .*list_eval_partition.txt"):
        celeba(tmp_path).setup("fit")


def test_celeba_bad_partition_line_is_named(tmp_path):
    write_celeba(tmp_path)
    part = tmp_path / "celeba" / "list_eval_partition.txt"
    part.write_text(part.read_text() + "000099.jpg 7\n")
    with pytest.raises(DataError, match=f"^CelebA file is corrupt: {part}: line 8"):
        celeba(tmp_path).check()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_celeba_corrupt_jpeg_is_named_at_load(tmp_path, damage):
    write_celeba(tmp_path)
    path = tmp_path / "celeba" / "img_align_celeba" / "000002.jpg"
    path.write_bytes(path.read_bytes()[:400] if damage == "truncate" else b"\x00" * 100)
    dm = celeba(tmp_path, batch_size=3)
    dm.check()  # cheap: decodes nothing
    dm.setup("fit")
    with pytest.raises(DataError, match=f"^CelebA file is corrupt: {path}"):
        dm.train_set[1]
    with pytest.raises(DataError, match=f"^CelebA file is corrupt: {path}"):
        list(dm.train_dataloader())


def test_celeba_corrupt_jpeg_in_a_worker_keeps_the_message(tmp_path):
    write_celeba(tmp_path, counts={"train": 2})
    path = tmp_path / "celeba" / "img_align_celeba" / "000001.jpg"
    path.write_bytes(path.read_bytes()[:300])
    dm = celeba(tmp_path, num_workers=1, persistent_workers=False)
    dm.setup("fit")
    with pytest.raises(DataError, match=f"^CelebA file is corrupt: {path}: cannot decode") as e:
        list(dm.train_dataloader())
    assert "\n" not in str(e.value) and "worker process 0" in e.value.worker_traceback


# ----------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz, subdir", [(True, "MNIST/raw"), (False, "MNIST/raw"), (True, "mnist"), (False, ".")])
def test_mnist_round_trip_in_every_layout(tmp_path, gz, subdir):
    written = write_mnist(tmp_path, n_train=4, n_test=3, gz=gz, subdir=subdir)
    dm = mnist(tmp_path)
    dm.check()
    dm.setup("fit")
    for split, ds in (("train", dm.train_set), ("test", dm.val_set)):
        x, y = stack(ds)
        assert x.shape == (len(written[split][0]), 1, 28, 28)
        assert torch.equal(x, as_float(written[split][0])[:, None])
        assert torch.equal(y, torch.from_numpy(written[split][1]))
    assert dm.data_shape == (1, 28, 28) and dm.channels == 1


def test_mnist_torchvision_layout_wins(tmp_path):
    write_mnist(tmp_path, seed=1, subdir="mnist")
    written = write_mnist(tmp_path, seed=2, subdir="MNIST/raw")
    x, _ = stack(mnist(tmp_path).load_split("test"))
    assert torch.equal(x, as_float(written["test"][0])[:, None])


def test_mnist_resize(tmp_path):
    write_mnist(tmp_path)
    dm = mnist(tmp_path, image_size=32, dequantize=True)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 32, 32) and x.min() >= 0 and x.max() < 1
    assert dm.data_shape == (1, 32, 32)


def test_mnist_missing_is_named(tmp_path):
    with pytest.raises(DataError, match="^MNIST data not found") as e:
        mnist(tmp_path).check()
    for where in (tmp_path / "MNIST" / "raw", tmp_path / "mnist"):
        assert str(where) in str(e.value)
    assert "t10k-labels-idx1-ubyte" in str(e.value) and "data.download=true" in str(e.value)
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="^MNIST data not found"):
        mnist(tmp_path).setup("fit")


@pytest.mark.parametrize(
    "damage, gz",
    [("magic", False), ("magic", True), ("truncate", False), ("truncate", True), ("count", False), ("size", False)],
)
def test_mnist_corrupt_file_is_named(tmp_path, damage, gz):
    write_mnist(tmp_path, gz=gz)
    raw = tmp_path / "MNIST" / "raw"
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = raw / name
    if damage == "magic":
        write_idx(raw / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), 2049, gz)
        match = "magic number is 2049, expected 2051"
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-30])
        match = ""
    elif damage == "count":
        write_idx(raw / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), 2051, gz)
        path = raw / "train-labels-idx1-ubyte"
        match = "4 labels for the 5 images"
    else:
        write_idx(raw / "train-images-idx3-ubyte", np.zeros((4, 32, 32), np.uint8), 2051, gz)
        match = "images are 32x32, expected 28x28"
    with pytest.raises(DataError, match=f"^MNIST file is corrupt: {path}.*{match}"):
        mnist(tmp_path).check()
    with pytest.raises(DataError, match=f"^MNIST file is corrupt: {path}.*{match}"):
        mnist(tmp_path).setup("fit")


def test_mnist_gzip_stream_damage_is_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream; the stored size at the end is intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"^MNIST file is corrupt: {path}"):
        mnist(tmp_path).load_split("test")


# ----------------------------------------------------------------------------- training order


def test_epoch_shuffle_shards_a_seeded_permutation_and_resumes_mid_epoch():
    from ncsn.data.base import EpochShuffle

    full = EpochShuffle(10, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(order) == list(range(10)) and order == list(full)  # a permutation, fixed per (seed, epoch)
    full.set_epoch(3)
    assert list(full) != order
    # DDP: rank r of 3 takes every 3rd index of the same permutation, padded to 3 x 4 = 12
    shards = []
    for rank in range(3):
        s = EpochShuffle(10, seed=3, rank=rank, world=3)
        s.set_epoch(2)
        shards.append(list(s))
    assert all(len(x) == len(EpochShuffle(10, 3, r, 3)) == 4 for r, x in enumerate(shards))
    padded = order + order[:2]
    assert [padded[r::3] for r in range(3)] == shards
    # resume after 2 indices of epoch 2: that epoch continues where it stopped, later epochs are whole
    s = EpochShuffle(10, seed=3, keyed=True)
    s.resume_at(2, 2)
    s.set_epoch(2)
    assert list(s) == [(2, i) for i in order[2:]]
    s.set_epoch(3)
    assert len(list(s)) == 10


def test_augmentation_of_an_image_depends_only_on_seed_epoch_and_index():
    from ncsn.data.base import Augmented

    base = torch.utils.data.TensorDataset(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))
    aug = Augmented(base, flip=True, dequantize=True, levels=256, seed=1)
    torch.manual_seed(0)
    a = aug[(5, 2)][0]
    torch.manual_seed(1)  # the global stream does not matter
    assert torch.equal(aug[(5, 2)][0], a)
    assert not torch.equal(aug[(6, 2)][0], a)  # the next epoch draws new noise for the same image
    assert not torch.equal(Augmented(base, True, True, 256, seed=2)[(5, 2)][0], a)
    x = base[2][0]
    # x * 255/256 + U/256 of the image or of its mirror: within one level above one of them
    assert any(
        bool(((a - v * 255 / 256) >= 0).all() and ((a - v * 255 / 256) < 1 / 256).all()) for v in (x, x.flip(-1))
    )
