"""The research scripts run end to end on a small data set (their real entry points, tiny budgets)."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import TINY, small_set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import warm_start  # noqa: E402


def test_warm_start_scores_every_round_and_never_reads_unseen_classes(tmp_path):
    """With the generator's rate at 1e-12 (frozen at its ridge start) its image-space figures stay
    put round after round while the CSEM trains; unseen images are NaN, so reading them would fail."""
    small_set(tmp_path / "TOY", nan_unseen=True)
    out = tmp_path / "out"
    assert warm_start.main(["--dataset", str(tmp_path / "TOY"), "--recipe", "tuned", *TINY, "--epochs", "2",
                            "--seeds", "0,1", "--generator_lr", "1e-12",
                            "--out_dir", str(out)]) == 0
    runs = json.loads((out / "warm_start.json").read_text())
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert all(len(r[view]) == 3 and all(0 <= v <= 1 for v in r[view]) for view in warm_start.VIEWS)
        assert len(set(r["generator in image space"])) == 1 and len(set(r["generator in image space, training classes"])) == 1
        assert 0 < r["ridge"] <= 1
    assert (out / "warm_start.png").stat().st_size > 0
    assert "| common space |" in (out / "warm_start.md").read_text()


@pytest.mark.slow
def test_flower_search_scores_an_index_of_unseen_flowers_and_finds_each_photo_in_flo(tmp_path):
    """The flower model's pipeline on a small split of FLO_cap: split (the photos' 10 classes unseen,
    3 others seen), a tiny run, an index of the 60 photos, then the script: every photo is found
    among FLO's rows of its class (the featurizer check), precisions are fractions of K."""
    import flower_search
    from conftest import shared_path

    from zscrgan.cli import main
    from zscrgan.data.dataset import class_key, load_dataset

    cap, photos = shared_path("data", "FLO_cap"), shared_path("data", "flower_photos")
    unseen = ",".join(p.name for p in sorted(photos.iterdir()) if p.is_dir())
    assert main(["data", "split", str(cap), "--unseen", unseen, "--seen", "21,22,23,24", "--out",
                 str(tmp_path / "cap"), "--text_encoder", "all-MiniLM-L6-v2", "--image_encoder", "efficientnet-lite0"]) == 0
    assert main(["train", "--dataset", str(tmp_path / "cap"), "--recipe", "tuned", *TINY, "--epochs", "1",
                 "--select", "last", "--out_dir", str(tmp_path), "--no-report"]) == 0
    assert main(["index", "--run", str(tmp_path / "ckt_logs" / "cap_logs"), "--images", str(photos),
                 "--out", str(tmp_path / "index")]) == 0
    examples = Path(__file__).resolve().parents[1] / "examples" / "flower_descriptions.csv"
    result = flower_search.main(["--photos", str(photos), "--descriptions", str(examples), "--dataset",
                                 str(tmp_path / "cap"), "--index", str(tmp_path / "index"), "--out", str(tmp_path / "fs.md")])
    assert result["featurizer_check"]["photos"] == 60 and result["featurizer_check"]["clear"] == 60
    cap = load_dataset(tmp_path / "cap")
    captions = {class_key(cap.classnames[c]): len(cap.texts[c]) for c in cap.unseen}
    assert result["chance"] == pytest.approx(0.1)
    assert {"index index", "ridge"} <= {name.split(" (")[0] for name in result["models"]}
    for model in result["models"].values():
        assert 0 <= model["precision"] <= 1 and len(model["per_class"]) == 10
        assert all(abs(v * 15 - round(v * 15)) < 1e-9 for v in model["per_class"].values())  # 3 queries x top 5
        # every caption of the 10 classes a query too: per class, a fraction of (its captions x 5)
        assert 0 <= model["captions_precision"] <= 1 and len(model["captions_per_class"]) == 10
        assert model["captions_precision"] == pytest.approx(np.mean(list(model["captions_per_class"].values())))
        for name, value in model["captions_per_class"].items():
            hits = value * 5 * captions[class_key(name)]
            assert abs(hits - round(hits)) < 1e-6, (name, value)
    assert "| index index |" in (tmp_path / "fs.md").read_text()
    # CCA refitted on training + validation classes at its chosen setting (docs/results.md, "Over seeds")
    refit = flower_search.main(["--photos", str(photos), "--descriptions", str(examples), "--dataset",
                                str(tmp_path / "cap"), "--baseline", "cca", "--refit", "--out", str(tmp_path / "cca.md")])
    [(name, model)] = refit["models"].items()
    assert name.startswith("cca (") and name.endswith(", refitted)") and 0 <= model["precision"] <= 1


def test_flower_search_names_a_baseline_by_the_setting_validation_chose():
    import flower_search

    ridge = SimpleNamespace(params={"lam": 0.01, "pairs": "class_mean", "val_prec": 0.3})
    assert flower_search.described("ridge", ridge, False) == "ridge (class_mean, lambda 0.01)"
    cca = SimpleNamespace(params={"reg": 10.0, "dim": 64, "power": 0.0, "pairs": "caption", "val_prec": None})
    assert flower_search.described("cca", cca, True) == "cca (caption, reg 10, dim 64, power 0, refitted)"


def test_seen_curve_averages_draws_per_training_class_count(tmp_path):
    """Per-caption rows only, draws averaged, x = seen - 20% validation (41 seen -> 33 training)."""
    import seen_curve

    header = "method,protocol,prec@50_mean,prec@50_sd,map@50_mean,map@50_sd,train_seconds,seeds\n"
    for seen, draw, (ridge, tuned) in [(41, 0, (0.2, 0.18)), (41, 1, (0.3, 0.22)), (20, 0, (0.1, 0.12))]:
        (tmp_path / f"compare_s{seen}_d{draw}.csv").write_text(
            header + f"ridge,per_text,{ridge},0,0.1,0,1,1\ntuned,per_text,{tuned},0,0.1,0,9,1\nridge,per_class,0.9,0,0.5,0,1,1\n")
    found = seen_curve.read(str(tmp_path / "compare_*.csv"))
    assert {m: dict(v) for m, v in found.items()} == {"ridge": {16: [0.1], 33: [0.2, 0.3]},
                                                       "tuned": {16: [0.12], 33: [0.18, 0.22]}}
    seen_curve.main(["--runs", str(tmp_path / "compare_*.csv"), "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_bow_probe_tfidf_by_hand_and_words_that_carry_the_class_beat_uninformative_vectors(tmp_path):
    """TF-IDF against hand-computed values; on a set whose captions name their class's colour and
    whose text vectors are noise, ridge on the words finds the validation classes, on the vectors not."""
    import bow_probe

    bag = bow_probe.TfIdf(["red red petal", "blue petal", "a red"], min_df=1)
    assert list(bag.vocab) == ["blue", "petal", "red"]  # "a": one letter
    idf = np.log(4 / np.array([2, 3, 3])) + 1
    row = np.array([0, 1, 1 + np.log(2)]) * idf
    np.testing.assert_allclose(bag(["red red petal"])[0], row / np.linalg.norm(row), rtol=1e-6)
    assert not bag(["green"]).any()  # a word outside the vocabulary

    from zscrgan.data.dataset import ZeroShotData, save_dataset, split_validation

    # each class is two of eight attribute words; its photos, the sum of the words' vectors plus noise;
    # its text vectors, noise: only the words tell validation classes (new pairs of known words) apart
    rng = np.random.default_rng(0)
    words = ["red", "blue", "white", "pink", "spotted", "ruffled", "tall", "tiny"]
    vectors = {w: rng.normal(size=8) for w in words}
    pairs = [(a, b) for i, a in enumerate(words) for b in words[i + 1:]][:16]
    classes = list(range(1, 17))
    images = {c: (vectors[a] + vectors[b] + 0.3 * rng.normal(size=(6, 8))).astype(np.float32)
              for c, (a, b) in zip(classes, pairs)}
    texts = {c: rng.normal(size=(5, 12)).astype(np.float32) for c in classes}
    data = ZeroShotData(texts, images, classes[:13], classes[13:])
    save_dataset(data, tmp_path / "set")
    lines = ["class_id\tblock_index_within_class\tcaption_idx\tcaption"]
    lines += [f"{c}\t0\t{i}\tthis flower is {a} and {b}" for c, (a, b) in zip(classes, pairs) for i in range(5)]
    (tmp_path / "set" / "captions.tsv").write_text("\n".join(lines) + "\n")
    result = bow_probe.main(["--dataset", str(tmp_path / "set"), "--min_df", "1", "-k", "6",
                             "--out", str(tmp_path / "probe.json")])
    assert json.loads((tmp_path / "probe.json").read_text()) == json.loads(json.dumps(result))
    train, _ = split_validation(data, 0.2, 0)
    assert result["vocabulary"] == 4 + len({w for c in train for w in pairs[c - 1]})  # this, flower, is, and
    prec = {name: v["prec"] for name, v in result["val_prec"].items()}
    assert prec["TF-IDF"] > 0.9 and prec["TF-IDF + MiniLM"] > 0.9
    assert prec["MiniLM"] < prec["TF-IDF"] - 0.3  # noise vectors: near chance (1/3)


def test_a_blend_at_weight_one_or_zero_scores_as_either_model_and_between_mixes_their_cosines():
    import blend
    import torch
    from zscrgan.evaluation.baselines import AffineBaseline
    gen = torch.Generator().manual_seed(0)
    texts, images = torch.randn(6, 5, generator=gen), torch.randn(9, 5, generator=gen)
    a, b = (AffineBaseline("x", torch.zeros(5), torch.randn(5, d, generator=gen), torch.zeros(5),
                           torch.randn(5, d, generator=gen)) for d in (3, 4))

    def cosines(model):
        q = torch.nn.functional.normalize(model.embed_texts(texts), dim=1)
        return q @ torch.nn.functional.normalize(model.embed_images(images), dim=1).T
    assert torch.allclose(cosines(blend.Blend(a, b, 1.0)), cosines(a), atol=1e-6)
    assert torch.allclose(cosines(blend.Blend(a, b, 0.0)), cosines(b), atol=1e-6)
    assert torch.allclose(cosines(blend.Blend(a, b, 0.3)), 0.3 * cosines(a) + 0.7 * cosines(b), atol=1e-6)


def test_blend_embeds_the_validation_classes_once_for_every_weight_with_the_same_figures():
    import blend
    import torch
    from zscrgan.data.synthetic import make_builtin_dataset
    from zscrgan.evaluation.baselines import fit_baseline
    from zscrgan.evaluation.scoring import score_views

    class Counted:
        def __init__(self, model):
            self.model, self.calls = model, 0

        def embed_texts(self, texts):
            self.calls += 1
            return self.model.embed_texts(texts)

        def embed_images(self, images):
            return self.model.embed_images(images)

    data = make_builtin_dataset()
    first, second = (Counted(fit_baseline(m, data, list(data.seen), None)) for m in ("ridge", "cca"))
    sides = blend.Embedded(first, data, data.unseen, "cpu"), blend.Embedded(second, data, data.unseen, "cpu")
    for w in blend.WEIGHTS:
        once = score_views(blend.Blend(*sides, w), data, data.unseen, (5, 10), "cpu", details=False)[0]
        every_time = score_views(blend.Blend(first.model, second.model, w), data, data.unseen, (5, 10), "cpu",
                                 details=False)[0]
        assert once.as_dict() == every_time.as_dict(), w
    assert (first.calls, second.calls) == (1, 1)
    assert torch.equal(sides[0].embed_texts(None), first.model.embed_texts(torch.from_numpy(
        data.stacked_texts(data.unseen)[0])))


@pytest.mark.slow
def test_blend_over_a_compare_over_splits(tmp_path):
    import blend

    from zscrgan.cli import main
    source = small_set(tmp_path / "small")
    assert main(["compare", "--dataset", str(source), "--methods", "ridge,tuned", "--seeds", "0", "--splits", "2",
                 "--select_k", "5", "--out_dir", str(tmp_path), *TINY, "--epochs", "1"]) == 0
    folder = tmp_path / "compare_small_splits"
    assert blend.main([str(folder), "--method", "tuned", "--baseline", "ridge"]) == 0
    cells = [json.loads(line) for line in (folder / "blend_cells.jsonl").read_text().splitlines()]
    assert [(c["split"], c["method"], c["seed"]) for c in cells] == [(0, "tuned+ridge", 0), (1, "tuned+ridge", 0)]
    assert all(c["figures"]["weight"] in blend.WEIGHTS and 0 <= c["figures"]["test"]["prec@5"] <= 1 for c in cells)
    md = (tmp_path / "compare_small_splits_blend.md").read_text()
    assert "| tuned+ridge |" in md and "mean ± sd over 2 splits x seeds 0." in md
