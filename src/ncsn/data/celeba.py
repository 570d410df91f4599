"""CelebA, aligned and cropped faces, as in the NCSN papers: center crop 140, resize to image_size.

Layout (what ``torchvision.datasets.CelebA(root, download=True)`` writes)::

    <root>/celeba/img_align_celeba/000001.jpg .. 202599.jpg   178x218 RGB JPEGs
    <root>/celeba/list_eval_partition.txt                     lines "000001.jpg 0"

Partition codes: 0 train (162,770), 1 valid (19,867), 2 test (19,962). Images are decoded on
access (in the loader's workers); a JPEG that cannot be decoded raises a DataError naming it.
CelebA has no class labels: y is -1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .base import DataError
from .files import ROOT_HINT, FileImageDataModule, check_split, short_list, torchvision_download

FOLDER = "celeba"
IMAGES = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
SPLITS = {"train": 0, "valid": 1, "test": 2}
CROP = 140
HOME = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


def read_partition(path: Path) -> dict[str, list[str]]:
    """``list_eval_partition.txt`` -> {'train': [file names], 'valid': [...], 'test': [...]}."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    by_code = {code: split for split, code in SPLITS.items()}
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise _corrupt(path, f"cannot read it as text ({type(e).__name__}: {e})") from e
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise _corrupt(path, f"line {number} is {line!r}; expected '<file>.jpg <0|1|2>'")
        out[by_code[int(fields[1])]].append(fields[0])
    if not any(out.values()):
        raise _corrupt(path, "it lists no images")
    return out


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(
        f"CelebA file is corrupt: {path}: {why}. Fix: replace it with the official file "
        f"(from {HOME}, or delete it and rerun with data.download=true)"
    )


def load_face(path: Path, image_size: int) -> torch.Tensor:
    """Decode one JPEG, center crop 140x140, resize (bilinear) to image_size: float (3, s, s) in [0, 1].

    The same geometry as ``transforms.Compose([CenterCrop(140), Resize(image_size)])`` on the PIL
    image, which the NCSN / NCSNv2 code uses.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as f:
            im = f.convert("RGB")  # decodes the whole file: a truncated JPEG fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _corrupt(path, f"cannot decode it ({type(e).__name__}: {e})") from e
    if im.width < CROP or im.height < CROP:
        raise _corrupt(path, f"it is {im.width}x{im.height}, smaller than the {CROP}x{CROP} center crop")
    im = TF.center_crop(im, [CROP, CROP])
    im = TF.resize(im, [image_size, image_size], interpolation=InterpolationMode.BILINEAR)
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


class CelebaFaces(Dataset):
    """The listed JPEGs of one split, decoded on access; item ``(x (3, s, s), y=-1)``."""

    def __init__(self, folder: Path, names: list[str], image_size: int):
        self.folder, self.names, self.image_size = folder, names, image_size

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return load_face(self.folder / self.names[i], self.image_size), torch.tensor(-1, dtype=torch.long)


class CelebaDataModule(FileImageDataModule):
    """CelebA faces, 3 x image_size x image_size; splits 'train', 'valid', 'test'."""

    NAME = "CelebA"
    CHANNELS = 3
    SIZES = None
    SIZE_NOTE = (
        f"images are center-cropped to {CROP}x{CROP} and resized to image_size, "
        f"which must be a positive int (32 for NCSN, 64 for NCSNv2)"
    )
    VAL_SPLITS = ("valid", "test")
    DEFAULT_SIZE = 64

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def _absent(self) -> list[Path]:
        paths = [self.folder / IMAGES, self.folder / PARTITION]
        return [p for p in paths if not p.exists()]

    def _not_found(self, what: str) -> DataError:
        fetch = (
            "data.download=true only fetches in prepare_data(), which has not run: call it first"
            if self.download
            else "set data.download=true (needs the gdown package)"
        )
        return DataError(
            f"CelebA data not found: {what}. Fix: {fetch}, or data.root=/path/to/dir containing "
            f"{FOLDER}/{IMAGES}/ and {FOLDER}/{PARTITION} ({ROOT_HINT})."
        )

    def prepare_data(self):
        """Fetch with torchvision (Google Drive, needs gdown) when ``download`` and files are missing."""
        if self.download and self._absent():
            from torchvision.datasets import CelebA

            torchvision_download(
                "CelebA",
                lambda: CelebA(str(self.root), split="all", target_type=[], download=True),
                self.root,
                f"get img_align_celeba.zip and {PARTITION} from {HOME}, put both in "
                f"{self.folder} and unzip the zip there",
            )

    def _split_names(self) -> dict[str, list[str]]:
        """The partition, after checking that the folder and every listed image exist."""
        absent = self._absent()
        if absent:
            raise self._not_found("looked for " + " and ".join(str(p) for p in absent))
        names = read_partition(self.folder / PARTITION)
        present = set(os.listdir(self.folder / IMAGES))
        lost = [n for split in SPLITS for n in names[split] if n not in present]
        if lost:
            raise self._not_found(
                f"{len(lost)} images listed in {self.folder / PARTITION} are missing "
                f"from {self.folder / IMAGES}: {short_list(lost)}"
            )
        return names

    def check(self) -> None:
        """Folder, partition file and every listed image present (one directory listing; no image is
        decoded). Passes when files are absent but ``download`` is set."""
        if self.download and self._absent():
            return
        self._split_names()

    def load_split(self, split: str) -> CelebaFaces:
        check_split("CelebA", split, tuple(SPLITS))
        return CelebaFaces(self.folder / IMAGES, self._split_names()[split], self.image_size)
