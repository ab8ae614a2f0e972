"""The MNIST sample score (model/digit_score.py): the Frechet distance, the label files, and a classifier
trained on the real set telling real digits from blank and noise images."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from model.cards import _eval_tables
from model.digit_score import digit_scores, frechet_distance, train_digit_classifier
from model.tasks.mnist import binarize, default_root, load_mnist, load_mnist_labels

HAVE_DATA = (default_root() / "train-labels.idx1-ubyte.gz").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"MNIST files not in {default_root()}")


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_shifted_one() -> None:
    a = torch.randn(4000, 4, generator=torch.Generator().manual_seed(0)) @ torch.tensor(
        [[1.0, 0.3, 0, 0], [0, 1.0, 0.2, 0], [0, 0, 2.0, 0], [0.1, 0, 0, 0.5]]
    )
    a = a - a.mean(0)  # so that scaling a moves no mean
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)  # same covariance, mean moved
    wider = frechet_distance(a, a * 2.0)  # same mean; tr(S + 4S - 2 * 2S) = tr(S)
    assert wider == pytest.approx(float(torch.cov(a.double().T).trace()), rel=1e-6)


def test_label_files_load_and_bad_ones_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = torch.tensor([5, 0, 4, 1, 9])
    raw = struct.pack(">II", 0x801, 5) + bytes(labels.tolist())
    (tmp_path / "t10k-labels.idx1-ubyte.gz").write_bytes(gzip.compress(raw))
    monkeypatch.setenv("GRAM_MNIST_DIR", str(tmp_path))
    assert torch.equal(load_mnist_labels(split="test"), labels)
    bad = struct.pack(">II", 0x803, 5) + bytes(5)  # an image file's magic
    (tmp_path / "t10k-labels.idx1-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(ValueError, match="not an IDX1 ubyte label file"):
        load_mnist_labels(split="test")
    with pytest.raises(FileNotFoundError, match="set GRAM_MNIST_DIR"):
        load_mnist_labels(split="train")


@needs_data
def test_the_classifier_scores_real_digits_far_above_blank_and_noise_images() -> None:
    train = binarize(load_mnist(split="train")[:20_000])
    clf = train_digit_classifier(train, load_mnist_labels(split="train")[:20_000])
    test = binarize(load_mnist(split="test")[:1000])
    _, probs = clf.embed(test)
    assert float((probs.argmax(-1) == load_mnist_labels(split="test")[:1000]).float().mean()) > 0.85
    reference = test[:500]
    real = digit_scores(clf, test[500:], reference)
    blank = digit_scores(clf, torch.zeros(500, 28, 28, dtype=torch.bool), reference)
    noise = digit_scores(clf, torch.rand(500, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.13,
                         reference)
    assert real["recognisable"] > 0.5 and real["class_entropy_bits"] > 3.0  # ten digits, about evenly
    assert blank["class_entropy_bits"] == 0.0  # one image, one label
    assert real["feature_fd"] * 10 < min(blank["feature_fd"], noise["feature_fd"])
    assert noise["recognisable"] < real["recognisable"] / 2


def test_the_card_lists_nested_report_figures_as_dotted_rows() -> None:
    table = _eval_tables({"samples": 8, "digit_scores": {"recognisable": 0.5, "feature_fd": 3.0}, "png": "x"})
    assert "| digit_scores.recognisable | 0.5 |" in table and "| samples | 8 |" in table
    assert "png" not in table
