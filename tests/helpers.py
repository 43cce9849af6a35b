"""Small synthetic data and tiny model sizes shared by tests (import from here, not from test files)."""
import json
import shutil

import numpy as np

from zscrgan.data.dataset import ZeroShotData, save_dataset
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


def tied_captions_set(tied: bool = True, n_seen: int = 30, n_unseen: int = 10, photos: int = 12, captions: int = 3,
                      kinds: int = 2, noise: float = 3.0, seed: int = 0):
    """Captions that carry photo-level signal: each class comes in ``kinds`` varieties (a 'red' and a
    'white' rose), each photo shows one, and its captions describe it; texts and images see the
    class and the variety through fixed random linear maps. With ``tied`` caption_photos names each
    caption's photo; without, the ties are shuffled within each class (no photo-level signal left)."""
    rng = np.random.default_rng(seed)
    dim = 8
    text_map, image_map = rng.normal(size=(2 * dim, 24)), rng.normal(size=(2 * dim, 32))
    texts, images, ties = {}, {}, {}
    for c in range(1, n_seen + n_unseen + 1):
        variety = rng.normal(size=(kinds, dim)) * 2.0  # varieties differ more than classes do
        photo = np.concatenate([np.repeat(rng.normal(size=(1, dim)), photos, 0),
                                variety[np.arange(photos) % kinds]], 1)
        images[c] = (photo @ image_map + noise * rng.normal(size=(photos, 32))).astype(np.float32)
        own = np.repeat(np.arange(photos), captions)
        texts[c] = (photo[own] @ text_map + noise * rng.normal(size=(len(own), 24))).astype(np.float32)
        ties[c] = own if tied else rng.permutation(own)
    return ZeroShotData(texts, images, list(range(1, n_seen + 1)), list(range(n_seen + 1, n_seen + n_unseen + 1)),
                        "tied", text_photos=ties)


def caption_data(texts_per_class=(7, 3, 5, 9, 4, 6), images_per_class=8, unseen=2, seed=0) -> ZeroShotData:
    """Classes with different caption counts and equal photo counts; captions and photos are
    noisy linear maps of a class latent, so a linear fit has something to find."""
    rng = np.random.default_rng(seed)
    n = len(texts_per_class)
    latent = rng.normal(size=(n, 4))
    to_text, to_image = rng.normal(size=(4, 6)), rng.normal(size=(4, 5))
    texts = {c: (latent[c] @ to_text + 0.5 * rng.normal(size=(k, 6))).astype(np.float32)
             for c, k in enumerate(texts_per_class)}
    images = {c: (latent[c] @ to_image + 0.5 * rng.normal(size=(images_per_class, 5))).astype(np.float32)
              for c in range(n)}
    ids = list(range(n))
    return ZeroShotData(texts, images, ids[unseen:], ids[:unseen], name="captions")
