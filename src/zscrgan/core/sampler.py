"""Training batches as index tensors, a whole EM round at a time (docs/algorithm.md, "A batch").

Each row of a batch is one seen class:
- fewer rows than classes: consecutive slices of a shuffled class list, reshuffled when
  used up. The reference pads the short last slice with zero rows of class 0; here the
  class stream simply runs on into the next shuffle, so every batch is full and real.
- at least as many rows as classes: each class floor(B/n) times plus a random sample of
  the rest, in random order.
Each row's image is the next one of its class in a per-class round-robin; its text, one of its
class's drawn uniformly, or (with ``text_photos``, --own_captions) one of its image's own captions
(one of its class's where the image has none). Drawing a
round's indices at once keeps per-step Python work constant and lets them move to the
device in one copy.
"""
from __future__ import annotations

import torch


class BatchSampler:
    """Draws [n_batches, batch_size] class rows and image rows; state is tensors only."""

    def __init__(self, images_per_class: list[int], batch_size: int, seed: int,
                 texts_per_class: list[int] | None = None, text_photos: list | None = None):
        """``text_photos``: per class, each text's image row in the class (-1 for none)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.counts = torch.tensor(images_per_class, dtype=torch.long)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.text_counts = torch.tensor(texts_per_class or [1] * len(images_per_class), dtype=torch.long)
        self.text_offsets = torch.cumsum(self.text_counts, 0) - self.text_counts
        self.batch_size = batch_size
        self.rng = torch.Generator().manual_seed(seed)
        self.pointers = torch.zeros(len(images_per_class), dtype=torch.long)
        self.pending = torch.zeros(0, dtype=torch.long)  # rest of the current class shuffle
        self.photo_texts = None if text_photos is None else self._photo_texts(text_photos)

    def _photo_texts(self, text_photos: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(global text rows grouped by their image, each image's first position there, its count)."""
        image_rows, text_rows = [], []
        for k, rows in enumerate(text_photos):
            rows = torch.as_tensor(rows, dtype=torch.long)
            tied = torch.nonzero(rows >= 0).flatten()
            image_rows.append(self.offsets[k] + rows[tied])
            text_rows.append(self.text_offsets[k] + tied)
        image_rows, text_rows = torch.cat(image_rows), torch.cat(text_rows)
        order = torch.sort(image_rows, stable=True).indices
        counts = torch.bincount(image_rows, minlength=int(self.counts.sum()))
        return text_rows[order], torch.cumsum(counts, 0) - counts, counts

    @property
    def n_classes(self) -> int:
        return len(self.counts)

    def _class_stream(self, n_batches: int) -> torch.Tensor:
        n, b = self.n_classes, self.batch_size
        if b < n:
            needed = n_batches * b - len(self.pending)
            n_perms = max(0, -(-needed // n))
            perms = torch.rand(n_perms, n, generator=self.rng).argsort(1).reshape(-1)
            stream = torch.cat([self.pending, perms])
            self.pending = stream[n_batches * b:]
            return stream[: n_batches * b].view(n_batches, b)
        repeats, rest = divmod(b, n)
        base = torch.arange(n).repeat(repeats).expand(n_batches, -1)
        extra = torch.rand(n_batches, n, generator=self.rng).argsort(1)[:, :rest]
        rows = torch.cat([base, extra], 1)
        order = torch.rand(n_batches, b, generator=self.rng).argsort(1)
        return rows.gather(1, order)

    def _round_robin(self, classes: torch.Tensor) -> torch.Tensor:
        """Image row of each class occurrence, in stream order, advancing the pointers."""
        flat = classes.reshape(-1)
        order = torch.sort(flat, stable=True).indices
        sorted_cls = flat[order]
        first = torch.searchsorted(sorted_cls, sorted_cls, right=False)
        rank = torch.empty_like(flat)
        rank[order] = torch.arange(len(flat)) - first
        within = (self.pointers[flat] + rank) % self.counts[flat]
        self.pointers = (self.pointers + torch.bincount(flat, minlength=self.n_classes)) % self.counts
        return (self.offsets[flat] + within).view_as(classes)

    def sample(self, n_batches: int) -> dict[str, torch.Tensor]:
        """Class rows, image rows and (one random text each: of the class, or of the image) text rows."""
        classes = self._class_stream(n_batches)
        images = self._round_robin(classes)
        draw = torch.rand(classes.shape, generator=self.rng)
        texts = self.text_offsets[classes] + (draw * self.text_counts[classes]).long()
        if self.photo_texts is not None and len(self.photo_texts[0]):  # the same draw, among the image's captions
            grouped, first, count = self.photo_texts
            own = grouped[(first[images] + (draw * count[images]).long()).clamp(max=len(grouped) - 1)]
            texts = torch.where(count[images] > 0, own, texts)
        return {"classes": classes, "images": images, "texts": texts}

    def state_dict(self) -> dict:
        # the key "generator" is the checkpoint format's name for the rng: kept so old checkpoints load
        return {"generator": self.rng.get_state(), "pointers": self.pointers.clone(),
                "pending": self.pending.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["generator"])
        self.pointers = state["pointers"].clone()
        self.pending = state["pending"].clone()
