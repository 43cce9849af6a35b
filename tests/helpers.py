"""Small synthetic data and tiny model sizes shared by tests (import from here, not from test files)."""
import json
import shutil

import numpy as np

from zscrgan.data.dataset import save_dataset
from zscrgan.data.synthetic import make_builtin_dataset

TINY = ["--gf_dim", "32", "--df_dim", "32", "--embed_dim", "16", "--z_dim", "8", "--e_steps", "4",
        "--m_steps", "4", "--n_critic", "2", "--batch_size", "8", "--no-report"]


def small_set(folder, nan_unseen=False):
    """12 seen and 4 unseen classes of 12 images; ``nan_unseen``: reading the unseen images fails."""
    data = make_builtin_dataset(n_seen=12, n_unseen=4, images_per_class=12, texts_per_class=2)
    if nan_unseen:
        for c in data.unseen:
            data.images[c] = np.full_like(data.images[c], np.nan)
    return save_dataset(data, folder)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def small_tree(photos, dest, classes=("daffodil", "poinsettia"), per_class=2):
    """A copy of a few real photos in tmp_path, so a test can add files beside them."""
    for name in classes:
        (dest / name).mkdir(parents=True)
        for photo in sorted((photos / name).glob("*.jpg"))[:per_class]:
            shutil.copy(photo, dest / name / photo.name)
    return dest
