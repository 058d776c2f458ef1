"""The registered metrics wire inputs correctly: checked with a transparent evaluator against hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mibench.api.attack import Reconstructions
from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs
from mibench.data.base import UNLABELLED, DataBundle, ImageSet, to_float
from mibench.metrics.attack_accuracy import AttackAccuracy, AttackAccuracyParams
from mibench.metrics.frechet import FrechetDistance, FrechetParams
from mibench.metrics.functional import frechet_distance_of_features, knn_distance, prdc_naeem
from mibench.metrics.knn import KNNDistance, KNNParams
from mibench.metrics.prdc import PRDC, PRDCParams
from mibench.metrics.utility import TargetAccuracy
from mibench.models.base import ClassifierOutput
from mibench.params import NoParams


class MeanBrightness(nn.Module):
    """Features: the first 6 pixels; logits: -(mean brightness - c/3)^2 for classes c = 0..3."""

    def forward(self, x):
        centres = torch.arange(4, dtype=x.dtype) / 3
        logits = -((x.mean((1, 2, 3)).unsqueeze(1) - centres) ** 2)
        return ClassifierOutput(x.flatten(1)[:, :6], logits)


def flat_images(levels, size=4):
    return (torch.tensor(levels).view(-1, 1, 1, 1) * torch.ones(1, 3, size, size) * 255).round().to(torch.uint8)


@pytest.fixture
def inputs():
    levels = [0.0, 0.05, 1 / 3, 0.3, 2 / 3, 0.7, 1.0, 0.95]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    train = ImageSet(flat_images(levels), labels)
    test = ImageSet(flat_images([0.0, 0.5, 1.0]), torch.tensor([0, 1, 3]))
    public = ImageSet(flat_images([0.5]), torch.tensor([UNLABELLED]))
    data = DataBundle(train, test, public, 4, "flat")
    recon_images = to_float(flat_images([0.02, 0.9, 0.35, 0.6, 0.98, 0.1], size=2))  # evaluated at 2x2, resized
    recon = Reconstructions(recon_images, torch.tensor([0, 1, 1, 2, 3, 3]), torch.tensor([0, 0, 1, 0, 0, 1]))
    model = MeanBrightness()
    return MeasureInputs(
        target=model,
        evaluator=model,
        evaluator_accuracy=1.0,
        data=data,
        eval_data=data,
        classes=torch.arange(4),
        reconstructions=recon,
        device=torch.device("cpu"),
    )


def test_attack_accuracy(inputs):
    values = {m.metric: m for m in AttackAccuracy(AttackAccuracyParams()).compute(inputs, RunContext())}
    # Predicted classes by brightness: 0.02->0, 0.9->3, 0.35->1, 0.6->2, 0.98->3, 0.1->0; intended 0,1,1,2,3,3.
    assert values["aa1"].value == pytest.approx(4 / 6)
    assert values["aa1"].higher_is_better is False and values["aa1"].unit == "fraction"
    # Restart 0 holds items 0,1,3,4 (3 of 4 correct), restart 1 items 2,5 (1 of 2): std of [0.75, 0.5].
    assert values["aa1"].details["restart_std"] == pytest.approx(torch.tensor([0.75, 0.5]).std().item())
    assert values["aa5"].value == 1.0  # four classes: top-5 always contains the label


def test_restart_std_is_the_official_per_batch_variance(inputs):
    """recovery.py: per batch of classes the sample variance over restarts, averaged over batches, square-rooted."""
    values = {m.metric: m for m in AttackAccuracy(AttackAccuracyParams(group_size=2)).compute(inputs, RunContext())}
    # Classes {0, 1}: restart accuracies 0.5 and 1.0 (variance 0.125); classes {2, 3}: 1.0 and 0.0 (variance 0.5).
    assert values["aa1"].details["restart_std"] == pytest.approx(((0.125 + 0.5) / 2) ** 0.5)


def test_attack_accuracy_counts_failed_reconstructions_as_misses(inputs):
    """BREP-MI's classes without an accepted expansion: the official accuracy counts them as failures."""
    inputs.reconstructions.failed = torch.tensor([True, False, False, False, False, False])
    values = {m.metric: m for m in AttackAccuracy(AttackAccuracyParams()).compute(inputs, RunContext())}
    assert values["aa1"].value == pytest.approx(3 / 6)  # item 0 was right by the evaluator, but failed
    assert values["aa5"].value == pytest.approx(5 / 6)


def test_knn_distance_uses_evaluator_features_of_same_class(inputs):
    (m,) = KNNDistance(KNNParams()).compute(inputs, RunContext())
    recon = inputs.reconstructions
    feats = nn.functional.interpolate(recon.images, size=(4, 4), mode="bilinear").flatten(1)[:, :6]
    private = to_float(inputs.eval_data.private_train.images).flatten(1)[:, :6]
    assert m.value == pytest.approx(knn_distance(feats, recon.labels, private, inputs.eval_data.private_train.labels))
    assert m.higher_is_better is True


def test_frechet_successful_subset(inputs):
    (m,) = FrechetDistance(FrechetParams(fake_subset="successful")).compute(inputs, RunContext())
    assert m.metric == "fd_evaluator" and m.details["n_fake"] == 4 and m.details["n_real"] == 8
    feats = inputs.reconstruction_outputs()[0][torch.tensor([0, 2, 3, 4])]
    real = inputs.private_train_outputs()[0]
    assert m.value == pytest.approx(frechet_distance_of_features(real, feats))
    (all_fd,) = FrechetDistance(FrechetParams(fake_subset="all")).compute(inputs, RunContext())
    assert all_fd.details["n_fake"] == 6 and all_fd.value != m.value


def test_target_accuracy(inputs):
    (m,) = TargetAccuracy(NoParams()).compute(inputs, RunContext())
    # 0.0 -> 0 and 1.0 -> 3 are right; 0.5 quantises to 128/255, nearer class 2's centre than class 1's: wrong.
    assert m.metric == "acc" and m.value == pytest.approx(2 / 3)


def test_prdc_wrapper(inputs):
    values = {m.metric: m for m in PRDC(PRDCParams(variant="naeem", k=1)).compute(inputs, RunContext())}
    real, fake = inputs.private_train_outputs()[0], inputs.reconstruction_outputs()[0]
    expected = prdc_naeem(real, fake, 1)  # every class is attacked, so every private image is real
    assert {k: v.value for k, v in values.items()} == pytest.approx(expected)
    assert values["precision"].higher_is_better is False  # the defender wants unfaithful reconstructions
    # Two private images and at most two reconstructions per class: too few for k = 1 per class (needs > k + 1).
    per_class = PRDC(PRDCParams(k=1)).compute(inputs, RunContext())
    assert per_class[0].details["classes"] == 0 and all(m.value != m.value for m in per_class)  # NaN


def test_trapdoor_detection_says_why_it_has_no_value_without_triggers(inputs):
    from mibench.metrics.trapdoor_detection import TrapdoorDetection, TrapdoorDetectionParams

    assert inputs.target_extras == {}
    values = TrapdoorDetection(TrapdoorDetectionParams()).compute(inputs, RunContext())
    assert [(m.metric, m.value) for m in values] == [("trapdoor_recall", None), ("trapdoor_auc", None)]
    assert all("no trapdoor triggers" in m.details["reason"] for m in values)
