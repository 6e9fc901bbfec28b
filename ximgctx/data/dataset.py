"""Posts as a PyTorch dataset: what every loader in ximgctx (training, evaluation, inference) iterates."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from ximgctx.data.record import Post

__all__ = ["PostDataset"]


class PostDataset(Dataset):
    """A list of posts as a map-style dataset (the collate function is the model's processor)."""

    def __init__(self, posts: Sequence[Post]) -> None:
        self.posts = list(posts)

    def __len__(self) -> int:
        return len(self.posts)

    def __getitem__(self, i: int) -> Post:
        return self.posts[i]
