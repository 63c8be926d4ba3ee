"""Training data: image folders as endless, reproducible streams of random crops.

Sample number k (counted over the whole run) decides everything about a sample: which
image (a fresh permutation of the folder every pass, seeded by the pass number) and
where it is cropped (seeded by k). So a run is the same whatever the number of loader
workers, and a resumed run continues exactly where it stopped. Files that cannot be used
(unreadable, truncated, tiny, enormous) are skipped and reported, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from . import images
from .errors import ImageError, UsageError
from .images import IMAGE_SUFFIXES
from .inputs import walk_images

MIN_TRAIN_SIDE = 32  # smaller images carry too little to learn from
_SALT_PERMUTATION, _SALT_CROP = 0x5EED, 0xC409


def find_images(root: Path) -> list[Path]:
    """Every image under `root` as inputs.walk_images finds them (hidden files and folders skipped),
    sorted as paths; UsageError if there is none."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    # Sorted as paths (part by part), not as the walk's strings: the order picks the samples.
    found = sorted(root / name for name in walk_images(root))
    if not found:
        raise UsageError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    return found


def _generator(*seeds: int) -> torch.Generator:
    mixed = 0
    for seed in seeds:
        mixed = (mixed * 1_000_003 + seed) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def load_for_training(path: Path, image_size: int, max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode with the shorter side resized to `image_size` (aspect kept); large JPEGs decode
    through draft mode. ImageError for anything unusable, tiny images included."""
    image = images.load_image(path, max_pixels, shorter_side=image_size)
    if min(image.size) < MIN_TRAIN_SIDE:
        width, height = image.size
        raise ImageError(path, f"{width}x{height} is too small (shorter side under {MIN_TRAIN_SIDE} px)")
    return images.resize_shorter_side(image, image_size)


class RandomCrops(Dataset):
    """Sample number -> (crop (3, S, S) in [0, 1], paths that had to be skipped to get it)."""

    def __init__(self, paths: list[Path], image_size: int, crop_size: int, seed: int) -> None:
        self.paths = paths
        self.image_size = image_size
        self.crop_size = crop_size
        self.seed = seed

    def image_index(self, sample: int) -> int:
        count = len(self.paths)
        order = torch.randperm(count, generator=_generator(self.seed, _SALT_PERMUTATION, sample // count))
        return int(order[sample % count])

    def __getitem__(self, sample: int) -> tuple[Tensor, list[str]]:
        skipped: list[str] = []
        index = self.image_index(sample)
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                image = load_for_training(path, self.image_size)
            except ImageError:
                skipped.append(str(path))
                continue
            return self._crop(image, sample), skipped
        raise UsageError(f"no usable image among {len(self.paths)} files (last: {path})")

    def _crop(self, image: Image.Image, sample: int) -> Tensor:
        width, height = image.size
        size = self.crop_size
        gen = _generator(self.seed, _SALT_CROP, sample)
        left = int(torch.randint(0, width - size + 1, (1,), generator=gen))
        top = int(torch.randint(0, height - size + 1, (1,), generator=gen))
        return images.to_tensor(image.crop((left, top, left + size, top + size)))[0]


class SampleNumbers(Sampler[int]):
    """The endless stream of sample numbers one rank uses, from a given iteration on.

    Iteration i, rank r of w, position j of a batch of b: sample ((i * w) + r) * b + j.
    """

    def __init__(self, start_iteration: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.batch, self.rank, self.world = start_iteration, batch_size, rank, world

    def __iter__(self) -> Iterator[int]:
        iteration = self.start
        while True:
            first = (iteration * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)
            iteration += 1


def collate(samples: list[tuple[Tensor, list[str]]]) -> tuple[Tensor, list[str]]:
    return torch.stack([s[0] for s in samples]), [p for s in samples for p in s[1]]


def check_usable(paths: list[Path], image_size: int, root: Path) -> None:
    """Fail before training starts when a folder has no image that loads."""
    for path in paths:
        try:
            load_for_training(path, image_size)
            return
        except ImageError:
            continue
    raise UsageError(f"{root}: none of its {len(paths)} image files could be used")
