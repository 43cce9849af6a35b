"""One EM round of ZSCRGAN (docs/algorithm.md, "The schedule"), fast and exact.

E-step: e_steps times (n_critic critic steps, then one generator step); M-step: m_steps
CSEM steps; every step on a fresh batch. Savings that change no result:
- the generator is frozen during the critic steps and the M-step, so the generator
  forwards of all those batches run as one batched, gradient-free product;
- the critic's three calls of a step share their text, so its text half is computed once
  (Critic.score_shared_text);
- the wrong text is the batch rolled by one and the encoder acts row by row, so the wrong
  pair's (mu, log_sigma) is the rolled (mu, log_sigma): one encoder pass, not two;
- losses are summed on the device and read once per round (no per-step syncs).
tests/experiments/test_trainer.py checks these against the plain loop of tests/reference.py.

On the CPU, glibc serves large blocks by mmap and unmaps them on free (and trims free space
at the heap top), so each step's fresh generator gradients (tens of MB at upstream's widths)
would be page-faulted back in. ``retain_freed_memory`` keeps freed blocks for reuse instead
(measured in docs/performance.md, "Freed memory is kept for reuse"); the process's RSS then stays at its peak. It
changes the whole process, so the training command calls it (``--retain_memory``), never
the trainer.
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np
import torch

from zscrgan.core.losses import critic_loss, csem_loss, kl_quirk, kl_standard, max_margin
from zscrgan.core.networks import ZSCRGAN, truncated_normal
from zscrgan.core.optim import make_optimizers
from zscrgan.core.sampler import BatchSampler
from zscrgan.evaluation.baselines import fit_baseline

LOSS_NAMES = ("critic", "generator", "adversarial", "mmr", "kl", "csem_e", "csem")


_retained = False


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (once per process); False where not glibc."""
    global _retained
    if not _retained and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except OSError:
            return False
        _retained = all(mallopt(param, value) == 1 for param, value in (
            (-4, 0),  # M_MMAP_MAX: large blocks from the heap too, not from fresh mmaps
            (-1, 2**31 - 1),  # M_TRIM_THRESHOLD (a C int): trim the heap top only past 2 GiB free
            (-2, 256 << 20)))  # M_TOP_PAD: grow the heap in large steps
    return _retained


class EMTrainer:
    """Model, optimisers, sampler and the training data of one run, on one device."""

    def __init__(self, cfg, data, train_classes: list, device: torch.device, val_classes: list | None = None):
        self.cfg, self.device = cfg, torch.device(device)
        images = [data.images[c] for c in train_classes]
        texts = [data.texts[c] for c in train_classes]
        dtype = torch.get_default_dtype()  # float32 unless a caller (a float64 test) changes it
        self.images = torch.from_numpy(_concat(images)).to(self.device, dtype)
        self.texts = torch.from_numpy(_concat(texts)).to(self.device, dtype)
        self.model = ZSCRGAN(data.text_dim, data.image_dim, cfg.embed_dim, cfg.z_dim,
                             cfg.gf_dim, cfg.df_dim, bool(cfg.generator_linear), bool(cfg.ridge_path)).to(self.device)
        if cfg.ridge_path:  # the text path starts as ridge, its lambda chosen on the validation classes
            ridge = fit_baseline("ridge", data, train_classes, val_classes, seed=cfg.seed, device=self.device,
                                 select_k=cfg.select_k, own_photo=cfg.photo_pairs)
            self.model.start_text_path(ridge.text_mean, ridge.text_map, ridge.image_mean)
        self.optimizers = make_optimizers(self.model, cfg)
        self.sampler = BatchSampler([len(x) for x in images], cfg.batch_size, cfg.seed, [len(t) for t in texts],
                                    [data.text_photos[c] for c in train_classes] if cfg.own_captions else None)
        self.kl = kl_standard if cfg.kl_standard else kl_quirk
        self._gen_params = self.model.generator_params()
        self._critic_params = list(self.model.critic.parameters())
        self._csem_params = list(self.model.csem.parameters())

    # ---- noise -------------------------------------------------------------------
    def draw_noise(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = truncated_normal((rows, self.cfg.embed_dim), device=self.device)
        z = torch.randn(rows, self.cfg.z_dim, device=self.device)
        return eps, z

    # ---- the three kinds of step ---------------------------------------------------
    def critic_steps(self, image_rows: torch.Tensor, text_rows: torch.Tensor, noise) -> torch.Tensor:
        """n_critic critic updates on batches [k, B]; returns the summed critic loss."""
        k, b = image_rows.shape
        x, t = self.images[image_rows], self.texts[text_rows]
        with torch.no_grad():
            x_hat = self.model.generate(t.reshape(k * b, -1), *noise)[0].view(k, b, -1)
        total = torch.zeros((), device=self.device)
        for j in range(k):
            x_real = x[j]
            d_fake, d_wrong, d_real = self.model.critic.score_shared_text(
                [x_hat[j], x_real.roll(1, 0), x_real], t[j])
            loss = critic_loss(d_fake, d_wrong, d_real)
            self._apply(self.optimizers["critic"], self._critic_params, loss)  # clips the weights too
            total = total + loss.detach()
        return total

    def generator_losses(self, image_rows: torch.Tensor, text_rows: torch.Tensor, noise) -> dict:
        """The generator objective L_G and its parts on one batch [B]."""
        cfg, model = self.cfg, self.model
        x, t = self.images[image_rows], self.texts[text_rows]
        b = len(x)
        eps, z = noise
        mu, log_sigma = model.encoder.stats(t)
        mu_w, log_sigma_w = mu.roll(1, 0), log_sigma.roll(1, 0)
        c = model.encoder.sample(mu, log_sigma, eps[:b])
        c_w = model.encoder.sample(mu_w, log_sigma_w, eps[b:])
        x_both = model.generator(torch.cat([c, c_w]), z, self._right_and_wrong_texts(t, 0))
        x_hat = x_both[:b]
        emb = model.csem(x_both)
        parts = {
            "adversarial": -model.critic(x_hat, t).mean(),
            "csem_e": csem_loss(emb[:b], emb[b:], c, cfg.csem_per_row),
            "mmr": max_margin(x_hat, x, x.roll(1, 0), cfg.mmr_hinge, cfg.mmr_margin),
            "kl": (self.kl(mu, log_sigma) + self.kl(mu_w, log_sigma_w)) / 2,
        }
        parts["generator"] = (parts["adversarial"] + parts["csem_e"] + cfg.mm_reg_coeff * parts["mmr"]
                              + cfg.kl_div_coefficient * parts["kl"])
        return parts

    def generator_step(self, image_rows, text_rows, noise) -> dict:
        parts = self.generator_losses(image_rows, text_rows, noise)
        self._apply(self.optimizers["generator"], self._gen_params, parts["generator"])
        return {k: v.detach() for k, v in parts.items()}

    def csem_steps(self, text_rows: torch.Tensor, noise, image_rows: torch.Tensor | None = None) -> torch.Tensor:
        """m_steps CSEM updates on batches [m, B] (encoder and generator frozen).

        With ``csem_real`` the real images of the batch (``image_rows``) are mapped too, towards
        their class's code c and away from the rolled row's, as the generated ones are.
        """
        m, b = text_rows.shape
        with torch.no_grad():
            t = self.texts[text_rows]
            mu, log_sigma = self.model.encoder.stats(t.reshape(m * b, -1))
            mu, log_sigma = mu.view(m, b, -1), log_sigma.view(m, b, -1)
            mu_w, log_sigma_w = mu.roll(1, 1), log_sigma.roll(1, 1)
            eps, z = noise  # [2*m*b, .]: the right rows first, then the wrong rows
            c = self.model.encoder.sample(mu, log_sigma, eps[: m * b].view(m, b, -1))
            c_w = self.model.encoder.sample(mu_w, log_sigma_w, eps[m * b:].view(m, b, -1))
            texts = self._right_and_wrong_texts(t, 1)
            x_hat = self.model.generator(torch.cat([c, c_w]).view(2 * m * b, -1), z,
                                         None if texts is None else texts.view(2 * m * b, -1)).view(2, m, b, -1)
        total = torch.zeros((), device=self.device)
        real = self.images[image_rows] if self.cfg.csem_real else None
        for j in range(m):
            parts = [x_hat[0, j], x_hat[1, j]] + ([real[j], real[j].roll(1, 0)] if real is not None else [])
            emb = self.model.csem(torch.cat(parts))
            loss = csem_loss(emb[:b], emb[b:2 * b], c[j], self.cfg.csem_per_row)
            if real is not None:
                loss = loss + csem_loss(emb[2 * b:3 * b], emb[3 * b:], c[j], self.cfg.csem_per_row)
            self._apply(self.optimizers["csem"], self._csem_params, loss)
            total = total + loss.detach()
        return total

    def _right_and_wrong_texts(self, t: torch.Tensor, dim: int) -> torch.Tensor | None:
        """The generator's text input for the right rows, then the wrong ones (rolled by one along
        ``dim``); None without a text path (--ridge_path), so no copy is made (a round's M-step
        texts are tens of MB)."""
        if self.model.generator.text_path is None:
            return None
        return torch.cat([t, t.roll(1, dim)])

    @staticmethod
    def _apply(optimizer, params, loss) -> None:
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        optimizer.step()

    # ---- a whole round ----------------------------------------------------------------
    def round_batches(self) -> dict[str, torch.Tensor]:
        """Index tensors of every batch of one round, on the device, in schedule order."""
        cfg = self.cfg
        n = cfg.e_steps * (cfg.n_critic + 1) + cfg.m_steps
        idx = self.sampler.sample(n)
        text_rows = idx["texts"] if cfg.all_texts or cfg.own_captions else self.sampler.text_offsets[idx["classes"]]
        return {"images": idx["images"].to(self.device), "texts": text_rows.to(self.device)}

    def run_round(self) -> dict[str, float]:
        """One EM round; returns the mean of each loss over its steps."""
        cfg, b = self.cfg, self.cfg.batch_size
        batches = self.round_batches()
        img, txt = batches["images"], batches["texts"]
        sums = {name: torch.zeros((), device=self.device) for name in LOSS_NAMES}
        per = cfg.n_critic + 1
        for i in range(cfg.e_steps):
            crit = slice(i * per, i * per + cfg.n_critic)
            sums["critic"] += self.critic_steps(img[crit], txt[crit], self.draw_noise(cfg.n_critic * b))
            parts = self.generator_step(img[i * per + cfg.n_critic], txt[i * per + cfg.n_critic],
                                        self.draw_noise(2 * b))
            for name, value in parts.items():
                sums[name] += value
        m_rows = txt[cfg.e_steps * per:]
        sums["csem"] += self.csem_steps(m_rows, self.draw_noise(2 * m_rows.numel()), img[cfg.e_steps * per:])
        counts = {"critic": cfg.e_steps * cfg.n_critic, "csem": cfg.m_steps}
        return {f"loss_{k}": v.item() / counts.get(k, cfg.e_steps) for k, v in sums.items()}

    # ---- state for checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.sampler.load_state_dict(state["sampler"])


def _concat(arrays):
    return np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)
