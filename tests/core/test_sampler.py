"""The batch sampler: class slicing, round-robin images, full batches only."""
from collections import Counter

import numpy as np
import torch

from zscrgan.core.sampler import BatchSampler


def test_fewer_rows_than_classes_walks_through_shuffles():
    counts = [3, 2, 4, 1, 5, 2, 3]
    s = BatchSampler(counts, batch_size=3, seed=0)
    classes = s.sample(14)["classes"]
    assert classes.shape == (14, 3)
    stream = classes.reshape(-1).tolist()  # 42 rows = exactly 6 shuffles of the 7 classes
    for k in range(6):
        assert sorted(stream[7 * k: 7 * k + 7]) == list(range(7))


def test_stream_continues_across_calls():
    a, b = BatchSampler([1] * 5, 2, seed=3), BatchSampler([1] * 5, 2, seed=3)
    one_go = a.sample(10)["classes"].reshape(-1)
    in_parts = torch.cat([b.sample(3)["classes"].reshape(-1), b.sample(7)["classes"].reshape(-1)])
    # the pending rest of a shuffle is used first, so both streams are permutations in blocks of 5
    for stream in (one_go, in_parts):
        for k in range(4):
            assert sorted(stream[5 * k: 5 * k + 5].tolist()) == list(range(5))


def test_more_rows_than_classes_repeats_each_class():
    s = BatchSampler([4, 4, 4], batch_size=8, seed=1)
    for row in s.sample(20)["classes"]:
        counts = Counter(row.tolist())
        assert sorted(counts) == [0, 1, 2]
        assert sorted(counts.values()) == [2, 3, 3]  # floor(8/3) = 2 each, plus 2 distinct extra


def test_round_robin_images_per_class():
    counts = [3, 2, 4]
    offsets = [0, 3, 5]
    s = BatchSampler(counts, batch_size=2, seed=5)
    out = s.sample(30)
    seen = {c: [] for c in range(3)}
    for c, img in zip(out["classes"].reshape(-1).tolist(), out["images"].reshape(-1).tolist()):
        seen[c].append(img - offsets[c])
    for c, rows in seen.items():
        assert rows == [i % counts[c] for i in range(len(rows))]
    # and the pointer carries into the next round
    nxt = s.sample(3)
    for c, img in zip(nxt["classes"].reshape(-1).tolist(), nxt["images"].reshape(-1).tolist()):
        assert img - offsets[c] == len(seen[c]) % counts[c]
        seen[c].append(img - offsets[c])


def test_every_row_is_a_real_image_and_text():
    s = BatchSampler([2, 3, 1, 4], batch_size=3, seed=2, texts_per_class=[1, 2, 3, 1])
    out = s.sample(50)
    img_offsets, txt_offsets = [0, 2, 5, 6], [0, 1, 3, 6]
    for c, i, t in zip(*(out[k].reshape(-1).tolist() for k in ("classes", "images", "texts"))):
        assert img_offsets[c] <= i < img_offsets[c] + [2, 3, 1, 4][c]
        assert txt_offsets[c] <= t < txt_offsets[c] + [1, 2, 3, 1][c]


def test_state_dict_resumes_the_same_stream():
    a = BatchSampler([3, 2, 4, 5], 3, seed=9)
    a.sample(4)
    state = a.state_dict()
    expected = a.sample(6)
    b = BatchSampler([3, 2, 4, 5], 3, seed=123)
    b.load_state_dict(state)
    got = b.sample(6)
    for key in expected:
        assert torch.equal(expected[key], got[key])


def test_the_e_step_draws_every_caption_of_a_class_about_equally_often():
    counts = [40, 7, 25]  # captions per class
    sampler = BatchSampler([5, 5, 5], batch_size=6, seed=0, texts_per_class=counts)
    drawn = sampler.sample(3000)  # 18,000 rows, 6,000 a class
    rows, classes = drawn["texts"].reshape(-1), drawn["classes"].reshape(-1)
    offsets = np.cumsum([0] + counts)
    for c, k in enumerate(counts):
        mine = rows[classes == c].numpy() - offsets[c]
        assert mine.min() >= 0 and mine.max() < k  # always a caption of the row's own class
        hist = np.bincount(mine, minlength=k)
        assert (hist > 0).all()  # every caption is drawn
        # uniform: chi-square with k-1 degrees of freedom, far below its 0.999 quantile
        expected = len(mine) / k
        chi2 = ((hist - expected) ** 2 / expected).sum()
        assert chi2 < k - 1 + 6 * np.sqrt(2 * (k - 1)), (c, chi2)


def test_the_sampler_draws_each_rows_text_among_its_photos_captions():
    photos_of_texts = [np.array([0, 0, 1, 1, 1, 2, -1]), np.array([1, 0, -1])]  # class 0: 3 images, class 1: 2
    plain = BatchSampler([3, 2], 4, seed=5, texts_per_class=[7, 3])
    own = BatchSampler([3, 2], 4, seed=5, texts_per_class=[7, 3], text_photos=photos_of_texts)
    a, b = plain.sample(200), own.sample(200)
    assert torch.equal(a["classes"], b["classes"]) and torch.equal(a["images"], b["images"])  # same stream
    captions_of = {0: {0, 1}, 1: {2, 3, 4}, 2: {5}, 3: {8}, 4: {7}}  # global image row -> its texts' global rows
    drawn = {}
    for image, text in zip(b["images"].flatten().tolist(), b["texts"].flatten().tolist()):
        drawn.setdefault(image, set()).add(text)
    assert drawn == captions_of  # every caption of each photo drawn, and only those
    assert not torch.equal(a["texts"], b["texts"])


def test_a_photo_without_captions_falls_back_to_its_class():
    own = BatchSampler([2], 2, seed=0, texts_per_class=[3], text_photos=[np.array([0, 0, -1])])
    batch = own.sample(100)
    texts_of_image_1 = set(batch["texts"][batch["images"] == 1].tolist())
    assert texts_of_image_1 == {0, 1, 2} and set(batch["texts"][batch["images"] == 0].tolist()) == {0, 1}
