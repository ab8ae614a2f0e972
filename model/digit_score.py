"""How much binarized-MNIST samples look like digits, judged by a small classifier trained on the real set.

The paper scores MNIST samples with FID (Inception features). Inception is not available offline here, so
the MNIST report uses a digit classifier of its own, trained in seconds on the binarized training images,
and reports three figures against the same figures for real held-out (test) images:

- ``recognisable``: fraction of images the classifier labels with probability >= 0.9;
- ``class_entropy_bits``: entropy of the predicted labels' histogram (log2 10 = 3.32 when every digit is
  equally common; 0 when every sample is the same digit): do the samples cover the ten digits?
- ``feature_fd``: Frechet distance between the classifier's hidden features of the images and of real
  test images (the FID formula on this small network's features). Not comparable with the paper's
  FID; compare it with ``feature_fd`` of other real images, which is its floor at this sample size.

Torch only (the model package stays importable with torch alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

CONFIDENT = 0.9  # a sample is "recognisable" when its top class has at least this probability


@dataclass
class DigitClassifier:
    features: nn.Module  # bits [B, 28, 28] -> hidden features [B, H]
    head: nn.Module  # hidden features -> 10 logits

    @torch.no_grad()
    def embed(self, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden features [B, H], class probabilities [B, 10]) of binarized images [B, 28, 28]."""
        h = self.features(bits.reshape(bits.shape[0], -1).to(torch.float32))
        return h, torch.softmax(self.head(h), dim=-1)


def train_digit_classifier(
    bits: torch.Tensor, labels: torch.Tensor, *, hidden: int = 128, epochs: int = 2, batch: int = 256,
    seed: int = 0,
) -> DigitClassifier:
    """A one-hidden-layer MLP on binarized images (bool [N, 28, 28]) and their labels; ~97 % test accuracy
    from the 60,000 training images in a few seconds on one CPU thread. Seeded, so reports repeat."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the layers' initialisation
    features = nn.Sequential(nn.Linear(bits[0].numel(), hidden), nn.ReLU())
    head = nn.Linear(hidden, 10)
    params = [*features.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    x = bits.reshape(bits.shape[0], -1).to(torch.float32)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for lo in range(0, x.shape[0], batch):
            idx = order[lo : lo + batch]
            loss = nn.functional.cross_entropy(head(features(x[idx])), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    features.eval()
    head.eval()
    return DigitClassifier(features, head)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between the rows of a and b (float64)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _psd_sqrt(s_a)
    # tr((S_a S_b)^(1/2)) = tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): the inner matrix is symmetric PSD
    cross = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross)


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def digit_scores(
    classifier: DigitClassifier, bits: torch.Tensor, reference: torch.Tensor
) -> dict[str, float]:
    """recognisable, class_entropy_bits and feature_fd (against ``reference``, real images) of ``bits``."""
    h, probs = classifier.embed(bits)
    h_ref, _ = classifier.embed(reference)
    counts = torch.bincount(probs.argmax(-1), minlength=10).to(torch.float64)
    p = counts / counts.sum()
    entropy = max(0.0, -sum(q * math.log2(q) for q in p.tolist() if q > 0))  # max: no -0.0
    return {
        "recognisable": round(float((probs.max(-1).values >= CONFIDENT).float().mean()), 4),
        "class_entropy_bits": round(entropy, 3),
        "feature_fd": round(frechet_distance(h, h_ref), 3),
    }
