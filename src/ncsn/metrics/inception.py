"""InceptionV3 pool features (2048-d) with TensorFlow-FID-compatible preprocessing: the weights
file and the pixel conversion (the network itself is torchmetrics' ``feature=2048`` extractor).

The weights are torch-fidelity's TF-FID weights (``weights-inception-2015-12-05-6726825d.pth``,
converted from the 2015-12-05 TensorFlow graph that TTUR's ``fid.py`` uses), given to
torchmetrics as ``feature_extractor_weights_path``; with ``antialias=False`` it resizes with
torch-fidelity's bilinear-like-TF1 interpolation (torchmetrics >= 1.8 defaults to an
antialiased resize that no longer matches TF FID).

Images are first turned into 8-bit pixels the way a saved PNG sample is (the NCSN/NCSNv2
protocol: torchvision ``save_image`` then pytorch-fid/TTUR on the files): NaN -> 0, clamp to
[0, 1], ``floor(255 x + 0.5)``. (torchmetrics' ``normalize=True`` truncates with
``(255 x).byte()``, which maps a stored pixel k/255 to k - 1 whenever round-off puts 255 x just
below k.)

The weights are never downloaded here: ``check_inception_weights`` finds the local file or
raises ``FIDWeightsMissing`` saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3 (torch-fidelity 0.4)
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
#: the config key that points at a local copy of the weights
WEIGHTS_CONFIG_KEY = "fid.weights_path"
_MIN_BYTES = 1_000_000  # the real file is ~91 MB; anything this small is a failed download


class FIDWeightsMissing(FileNotFoundError):
    """The InceptionV3 FID weights are not on disk; the message says what to fetch and where."""


def default_weights_path() -> Path:
    """Where torch's hub cache keeps the file: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def check_inception_weights(weights_path: str | os.PathLike | None) -> Path:
    """Return the path of the Inception FID weights, or raise ``FIDWeightsMissing``.

    ``weights_path`` (the ``fid.weights_path`` config key) is used when given; with None the
    file is looked up in the torch hub cache. Only the file system is touched (no network, no
    torch-fidelity import), so it is cheap to call at startup.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        where = (
            f"{WEIGHTS_CONFIG_KEY}={weights_path!r} does not exist.\n"
            f"Download {WEIGHTS_URL}\n"
            f"to that path:  mkdir -p {path.parent} && curl -L -o {path} {WEIGHTS_URL}\n"
            f"or set {WEIGHTS_CONFIG_KEY}=null to use the torch hub cache "
            f"({default_weights_path()})."
        )
    else:
        path = default_weights_path()
        where = (
            f"The InceptionV3 FID weights {WEIGHTS_FILE} are not in the torch hub cache "
            f"directory {path.parent} (torch.hub.get_dir()/checkpoints; set by $TORCH_HOME).\n"
            f"Download {WEIGHTS_URL}\n"
            f"into that directory:  mkdir -p {path.parent} && curl -L -o {path} {WEIGHTS_URL}\n"
            f"or point the config key at a copy: {WEIGHTS_CONFIG_KEY}=/path/to/{WEIGHTS_FILE}\n"
            "(or use fid=classifier for small grayscale data, which needs no download)."
        )
    if not path.is_file():
        raise FIDWeightsMissing(where)
    size = path.stat().st_size
    if size < _MIN_BYTES:
        raise FIDWeightsMissing(
            f"{path} has only {size} bytes (the real file is about 91 MB): a "
            f"failed download. Delete it and fetch {WEIGHTS_URL} again."
        )
    return path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 pixels as a saved PNG has them: floor(255 x + 0.5)."""
    x = torch.nan_to_num(images.float(), nan=0.0).clamp(0.0, 1.0)
    return (x * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8)
