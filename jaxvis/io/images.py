"""Natural images: reading a folder of photographs into RGB float arrays in grey levels 0..255."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxvis.errors import JaxvisError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """``[H, W, 3]`` float32 RGB in 0..255 (grey and alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise JaxvisError(f"cannot read image {path}: {err}") from None


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise JaxvisError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise JaxvisError(f"image folder {folder} holds no images ({', '.join(SUFFIXES)})")
    return files


def resize_shorter(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resize (bicubic) so the shorter side is ``shorter`` pixels, keeping the aspect ratio."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = shorter / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(pil.resize(size, Image.BICUBIC), dtype=np.float32)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def classifier_input(image: np.ndarray, size: int = 224) -> np.ndarray:
    """The usual ImageNet evaluation crop: shorter side to ``size * 256 / 224``, centre crop."""
    return centre_crop(resize_shorter(image, round(size * 256 / 224)), size)
