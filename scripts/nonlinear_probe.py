"""Can any nonlinear text-to-image map beat ridge on caption data? A probe without the GAN (issue 20).

    python scripts/nonlinear_probe.py --dataset ../shared/data/FLO_cap --seed 0 --out runs/nonlinear_probe.json

On the seed's validation split (as ``--select val``; the unseen classes are never read): ridge
(lambda and pairing chosen on the validation classes), then an MLP residual on top of it,
x_hat = ridge(t) + MLP(t), its last layer started at zero, trained by least squares towards
(a) the mean photo of the caption's class, (b) a photo of the class drawn per caption, scored
every 1,000 steps by validation Prec@50 (every caption a query). If a plain regressor with
ridge inside it cannot beat ridge, the GAN's generator, which is such a map trained on other
losses, has no room to either: the limit is the number of training classes (the distinct
targets), not the number of captions.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from zscrgan.core.embedding import evaluating
from zscrgan.data.dataset import load_dataset, split_validation
from zscrgan.evaluation.baselines import fit_baseline, training_pairs, validation_scorer
from zscrgan.files import write_json

SETTINGS = [  # (learning rate, weight decay, hidden width, target pairing)
    (1e-3, 1e-4, 512, "class_mean"), (1e-3, 1e-4, 512, "caption"), (3e-4, 1e-3, 1024, "class_mean")]


class Residual(torch.nn.Module):
    """ridge(t) + MLP(t) in centred image space; the MLP starts at zero, so training starts at ridge."""

    def __init__(self, ridge, text_dim: int, image_dim: int, hidden: int):
        super().__init__()
        self.ridge = ridge
        self.mlp = torch.nn.Sequential(torch.nn.Linear(text_dim, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(hidden, image_dim))
        torch.nn.init.zeros_(self.mlp[-1].weight)
        torch.nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, t):
        return self.ridge.embed_texts(t) + self.mlp(t)

    @torch.no_grad()
    def embed_texts(self, t):
        with evaluating(self):
            return self(t)

    def embed_images(self, x):
        return self.ridge.embed_images(x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset, splits=("seen",))
    train, val = split_validation(data, 0.2, args.seed)
    ridge = fit_baseline("ridge", data, train, val, seed=args.seed)
    score_val = validation_scorer(data, val)  # Prec@50 of validation captions over validation photos
    result = {"ridge": ridge.params, "mlp": []}
    print(f"ridge: validation Prec@50 {ridge.params['val_prec']:.4f} ({ridge.params['pairs']}, lambda {ridge.params['lam']:.3g})")
    for lr, decay, hidden, pairing in SETTINGS:
        pairs = training_pairs(data, train, args.seed, pairing=pairing)
        model = Residual(ridge, data.text_dim, data.image_dim, hidden)
        opt = torch.optim.AdamW(model.mlp.parameters(), lr=lr, weight_decay=decay)
        for step in range(1, args.steps + 1):
            idx = torch.randint(0, len(pairs.texts), (256,))
            loss = ((model(pairs.texts[idx]) - ridge.embed_images(pairs.images[idx])) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 1000 == 0:
                val_prec = score_val(model)
                result["mlp"].append({"lr": lr, "weight_decay": decay, "hidden": hidden, "pairs": pairing,
                                      "step": step, "val_prec": val_prec})
                print(f"MLP residual (lr {lr}, decay {decay}, width {hidden}, {pairing}) step {step}: "
                      f"validation Prec@50 {val_prec:.4f}", flush=True)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
