"""The `published` evaluation protocol: each official pipeline's transforms on closed-form inputs, and the plumbing."""

from __future__ import annotations

import pytest
import torch

from mibench.metrics.functional import prdc_nearest
from mibench.metrics.published import (
    drop_remainder,
    kornia_resize,
    lomma_uint8,
    low2high,
    minmax_png_roundtrip,
)


def test_minmax_png_roundtrip_stretches_each_image_and_rounds_to_8_bits():
    constant = torch.full((1, 3, 2, 2), 0.37)
    assert minmax_png_roundtrip(constant).abs().max() == 0  # torchvision: (x - low) / max(high - low, 1e-5) = 0
    image = torch.tensor([0.25, 0.5, 0.75, 0.75]).view(1, 1, 2, 2)  # exact in float32, as torchvision computes
    expected = torch.tensor([0.0, 128.0, 255.0, 255.0]).view(1, 1, 2, 2) / 255  # 0.5 * 255 + 0.5 = 128 (rounded)
    torch.testing.assert_close(minmax_png_roundtrip(image), expected)
    pair = torch.stack([image[0], image[0] * 2 - 1])  # each image on its own range: an unclamped one too
    torch.testing.assert_close(minmax_png_roundtrip(pair)[1], expected[0])


@pytest.mark.parametrize(("count", "used"), [(150, 100), (250, 200), (100, 100), (50, 50), (0, 0)])
def test_fid_batches_drop_the_remainder(count, used):
    """pytorch-fid's get_activations with batch 100; fewer images than a batch become one batch of all of them."""
    assert drop_remainder(count) == used


def test_lomma_fid_maps_unit_images_to_127_255():
    x = torch.tensor([0.0, 0.5, 1.0, 0.999]).view(1, 1, 2, 2)
    assert lomma_uint8(x).flatten().tolist() == [127, 191, 255, 254]  # (x / 2 + 0.5) * 255, truncated


def test_kornia_resize_aligns_corners():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    # align_corners=True samples the 2x2 grid at 0, 1/3, 2/3, 1 of its span: value = x_col + 2 y_row there.
    steps = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    expected = (steps[None, :] + 2 * steps[:, None]).view(1, 1, 4, 4)
    torch.testing.assert_close(kornia_resize(x, 4), expected)
    standard = torch.nn.functional.interpolate(x, size=4, mode="bilinear", align_corners=False)
    assert not torch.allclose(standard, expected)


def test_low2high_truncates_to_8_bits_before_the_pil_resize():
    x = torch.full((1, 3, 4, 4), 0.999)  # 254.7: ToPILImage truncates to 254, rounding would give 255
    assert torch.allclose(low2high(x, 8), torch.full((1, 3, 8, 8), 254 / 255))
    grey = torch.zeros(2, 1, 4, 4)
    assert low2high(grey, (6, 5)).shape == (2, 1, 6, 5)


def test_published_prdc_density_averages_over_the_real_images():
    """Hand count: reals at 0, 1, 10 (k = 1 radii 1, 1, 9); fakes at 0.5, 0.6, 5, 100."""
    real = torch.tensor([[0.0], [1.0], [10.0]])
    fake = torch.tensor([[0.5], [0.6], [5.0], [100.0]])
    # Balls: real 0 (r 1) holds 0.5, 0.6; real 1 (r 1) holds 0.5, 0.6; real 10 (r 9) holds 5. Total 5 memberships.
    assert prdc_nearest(real, fake, k=1)["density"] == pytest.approx(5 / 4)  # Naeem: over the 4 fakes
    assert prdc_nearest(real, fake, k=1, density_over="reals")["density"] == pytest.approx(5 / 3)  # PPA: 3 reals


class _Brightness(torch.nn.Module):
    """An evaluator whose features are per-channel means and whose class is the brightness bucket (4 classes)."""

    def forward(self, x):
        from mibench.models.base import ClassifierOutput

        level = x.mean(dim=(1, 2, 3))
        logits = -((level[:, None] - torch.tensor([0.1, 0.35, 0.6, 0.85])) ** 2) * 100
        return ClassifierOutput(x.mean(dim=(2, 3)) * 10, logits)


def _inputs(protocol="standard", pipeline=None, n=6):
    from mibench.api.attack import Reconstructions
    from mibench.api.metric import MeasureInputs
    from mibench.data.base import UNLABELLED, DataBundle, ImageSet

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(8)
    levels = torch.tensor([0.1, 0.35, 0.6, 0.85])[labels]
    train = ImageSet((levels.view(-1, 1, 1, 1) * 255 + torch.randint(-20, 20, (32, 3, 8, 8), generator=gen))
                     .clamp(0, 255).to(torch.uint8), labels)  # fmt: skip
    test = ImageSet(train.images[:4], labels[:4])
    public = ImageSet(train.images[:1], torch.tensor([UNLABELLED]))
    data = DataBundle(train, test, public, 4, "levels")
    recon_labels = torch.arange(4).repeat(n // 4 + 1)[:n]
    images = (torch.tensor([0.1, 0.35, 0.6, 0.85])[recon_labels].view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 3, 8, 8,
              generator=gen)).clamp(0, 1)  # fmt: skip
    recon = Reconstructions(images, recon_labels, torch.arange(n) // 4)
    return MeasureInputs(
        target=_Brightness(), evaluator=_Brightness(), evaluator_accuracy=1.0, data=data, eval_data=data,
        classes=torch.arange(4), reconstructions=recon, device=torch.device("cpu"), protocol=protocol,
        pipeline=pipeline,
    )  # fmt: skip


def test_records_say_which_protocol_and_pipeline_they_follow():
    from mibench.api.context import RunContext
    from mibench.metrics.attack_accuracy import AttackAccuracy, AttackAccuracyParams
    from mibench.metrics.knn import KNNDistance, KNNParams

    standard = KNNDistance(KNNParams()).compute(_inputs(), RunContext())[0]
    published = KNNDistance(KNNParams()).compute(_inputs("published", "plgmi-baselines"), RunContext())[0]
    assert standard.details["protocol"] == "standard" and standard.details["pipeline"] == "standard"
    assert published.details["pipeline"] == "plgmi-baselines"
    assert published.value != pytest.approx(standard.value)  # the min-max 8-bit PNGs move the features
    overridden = KNNDistance(KNNParams(protocol="standard")).compute(_inputs("published", "plgmi"), RunContext())[0]
    assert overridden.value == pytest.approx(standard.value) and overridden.details["protocol"] == "standard"
    no_pipeline = AttackAccuracy(AttackAccuracyParams()).compute(_inputs("published", None), RunContext())[0]
    assert no_pipeline.details["pipeline"].startswith("standard (the attack has no published pipeline)")


def test_published_fid_pixels_and_remainder_on_a_stand_in_extractor():
    from mibench.api.context import RunContext
    from mibench.metrics.frechet import FrechetDistance, FrechetParams

    params = FrechetParams(extractor="evaluator", fake_subset="all")
    (plg,) = FrechetDistance(params).compute(_inputs("published", "plgmi", n=150), RunContext())
    assert plg.details["n_fake"] == 100 and plg.details["n_fake_before_drop"] == 150  # batches of 100
    assert plg.details["n_real"] == 32 and "min-max" in plg.details["pixels"]
    (lomma,) = FrechetDistance(params).compute(_inputs("published", "lomma", n=150), RunContext())
    assert lomma.details["n_fake"] == 150 and "[127, 255]" in lomma.details["pixels"]
    (standard,) = FrechetDistance(params).compute(_inputs(n=150), RunContext())
    assert len({round(v, 6) for v in (plg.value, lomma.value, standard.value)}) == 3
    nothing = _inputs("published", "plgmi")
    nothing.reconstructions.failed = torch.ones(6, dtype=torch.bool)
    (missing,) = FrechetDistance(FrechetParams(extractor="evaluator")).compute(nothing, RunContext())
    assert missing.value != missing.value and missing.details["official_value"] == -1000  # NaN, the sentinel named


def test_published_plgmi_fid_uses_torchvision_inception_with_its_hash_checked(tmp_path, monkeypatch):
    import torchvision

    from mibench.api.context import RunContext
    from mibench.errors import CheckpointError
    from mibench.metrics.frechet import FrechetDistance, FrechetParams

    monkeypatch.delenv("MIBENCH_WEIGHTS", raising=False)
    params = FrechetParams(extractor="inception", fake_subset="all")
    with pytest.raises(CheckpointError, match=r"inception_v3_google-0cc3c7bd\.pth"):
        FrechetDistance(params).compute(_inputs("published", "plgmi", n=4), RunContext())
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "inception_v3_google-0cc3c7bd.pth")
    monkeypatch.setenv("MIBENCH_WEIGHTS", str(tmp_path))
    (value,) = FrechetDistance(params).compute(_inputs("published", "plgmi", n=4), RunContext())
    assert value.metric == "fd_inception"  # not the released file's hash: never called FID
    assert value.details["extractor"].startswith("inception-v3 (torchvision") and value.details["n_fake"] == 4


def test_plgmi_knn_under_published_reads_the_raw_generator_output_not_the_clamped_image():
    # PLG-MI's reconstruct.py saves save_image(normalize=True) of the raw G(z, y) for KNN: the min-max stretch of
    # the unclamped output, as the evaluator input already does
    import dataclasses
    import types

    from mibench.metrics.evaluator_views import published_outputs
    from mibench.metrics.published import knn_input
    from tests.conftest import random_measure_inputs

    raw = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2  # outside [0, 1]
    inputs = random_measure_inputs([0, 1], raw.clamp(0, 1), [0, 1])
    inputs.reconstructions = dataclasses.replace(inputs.reconstructions, unclamped=raw)
    inputs.evaluator = lambda x: types.SimpleNamespace(features=x.flatten(1), logits=x.flatten(1)[:, :2])
    features, _ = published_outputs(inputs, "knn", "plgmi")
    assert torch.allclose(features, knn_input(raw, "plgmi", inputs.eval_size).flatten(1))
    assert not torch.allclose(features, knn_input(raw.clamp(0, 1), "plgmi", inputs.eval_size).flatten(1))


def test_ppa_frechet_and_prdc_records_say_standard_so_the_paper_is_never_beside_them():
    # mibench computes PPA's FID and PRDC through its standard feature path (stored renders), not PPA's own (fresh
    # unclamped 299 renders into pytorch-fid): labelled `published`/`ppa`, --compare-paper paired them with Table 19
    import dataclasses
    import types

    from mibench.api.context import RunContext
    from mibench.metrics.frechet import FrechetDistance, FrechetParams
    from mibench.metrics.prdc import PRDC, PRDCParams
    from mibench.reporting.compare import measured_protocols
    from tests.conftest import random_measure_inputs

    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    inputs = random_measure_inputs([0, 0, 1, 1], images, [0, 0, 1, 1])
    inputs.protocol, inputs.pipeline = "published", "ppa"
    inputs.reconstructions = dataclasses.replace(inputs.reconstructions)
    inputs.evaluator = lambda x: types.SimpleNamespace(features=x.flatten(1)[:, :8], logits=x.flatten(1)[:, :2])
    measured = FrechetDistance(FrechetParams(fake_subset="all")).compute(inputs, RunContext())
    measured += PRDC(PRDCParams(k=1)).compute(inputs, RunContext())
    for m in measured:
        assert m.details["pipeline"].startswith("standard"), (m.metric, m.details["pipeline"])
    records = [types.SimpleNamespace(attack="PPA", metric=m.metric, details=m.details) for m in measured]
    followed = measured_protocols(records)
    assert {metric for _, metric in followed} >= {"precision", "density"}  # FD-eval is never paired anyway
    assert all(protocols == {"standard"} for protocols in followed.values())


def test_per_class_prdc_under_published_divides_density_by_the_reals_for_every_attack():
    # Trap-MID's Table 11 (PLG-MI) is only consistent with the per-real density (coverage exceeds the per-fake
    # bound k*d*F/R in every row), as PPA's and MIBench's per-class code computes it: the per_class convention's
    # density under `published` is the count over the reals, whichever attack's pipeline measured it
    import types

    from mibench.api.context import RunContext
    from mibench.metrics.prdc import PRDC, PRDCParams
    from tests.conftest import random_measure_inputs

    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    inputs = random_measure_inputs([0] * 8, images, [0] * 5)  # 5 fakes and 8 reals of one class
    inputs.evaluator = lambda x: types.SimpleNamespace(features=x.flatten(1)[:, :4], logits=x.flatten(1)[:, :2])
    density = {}
    for protocol in ("standard", "published"):
        inputs.protocol, inputs.pipeline = protocol, "plgmi"
        measured = PRDC(PRDCParams(k=1, extractor="evaluator")).compute(inputs, RunContext())
        density[protocol] = next(m for m in measured if m.metric == "density")
    assert density["published"].details["density_over"] == "reals"
    assert density["standard"].details["density_over"] == "fakes"
    assert density["standard"].value > 0
    # the same count, divided by k * 8 reals instead of k * 5 fakes
    assert density["published"].value == pytest.approx(density["standard"].value * 5 / 8)


def test_published_knn_reference_is_the_private_set_kornia_resized_as_get_private_feats_writes_it():
    # PLG-MI's evaluation.get_private_feats writes private_feats.npy from the private loader's images through kornia
    # Resize(112); mibench read the evaluator-resolution crops instead. Under `published` the PLG-MI family's (and
    # the baselines') KNN reference is the target-resolution private set, kornia-resized to the evaluator's input
    import dataclasses
    import types

    from mibench.api.context import RunContext
    from mibench.data.base import ImageSet, to_float
    from mibench.metrics.functional import knn_distance
    from mibench.metrics.knn import KNNDistance, KNNParams
    from mibench.metrics.published import knn_input, kornia_resize
    from tests.conftest import random_measure_inputs, random_uint8_images

    recon = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    inputs = random_measure_inputs([0, 0, 1, 1], recon, [0, 1])
    small = ImageSet(random_uint8_images(4, 9, size=8), torch.tensor([0, 0, 1, 1]))  # the target's 8-px private set
    inputs.data = dataclasses.replace(inputs.data, private_train=small)
    inputs.evaluator = lambda x: types.SimpleNamespace(features=x.flatten(1), logits=x.flatten(1)[:, :2])
    labels = torch.tensor([0, 1])
    fake = knn_input(recon, "plgmi", 16).flatten(1)
    for pipeline in ("plgmi", "plgmi-baselines"):
        inputs.protocol, inputs.pipeline, inputs._memo = "published", pipeline, {}
        (value,) = KNNDistance(KNNParams()).compute(inputs, RunContext())
        reference = kornia_resize(to_float(small.images), 16).flatten(1)
        assert value.value == pytest.approx(knn_distance(fake, labels, reference, small.labels), rel=1e-6)
        assert "kornia" in value.details["reference"]
    inputs.protocol, inputs._memo = "standard", {}
    (value,) = KNNDistance(KNNParams()).compute(inputs, RunContext())  # standard: the evaluator-resolution crops
    crops = to_float(inputs.eval_data.private_train.images).flatten(1)
    assert value.value == pytest.approx(knn_distance(recon.flatten(1), labels, crops, small.labels), rel=1e-6)


def test_brepmi_under_published_feeds_the_evaluator_low2high_and_measures_nothing_else_as_official():
    # BREP-MI's decision_Evaluator passes the generator's 64-px output through utils.low2high (8-bit truncation, PIL
    # bilinear to 112); its code measures the evaluator's top-1 only, so KNN and FID stay standard and say why
    import types

    from mibench.api.context import RunContext
    from mibench.metrics.attack_accuracy import AttackAccuracy, AttackAccuracyParams
    from mibench.metrics.knn import KNNDistance, KNNParams
    from mibench.metrics.published import evaluator_input, low2high
    from tests.conftest import random_measure_inputs

    recon = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(evaluator_input(recon, "brepmi", 16), low2high(recon, 16))
    inputs = random_measure_inputs([0, 1], recon, [0, 1, 1])
    inputs.protocol, inputs.pipeline = "published", "brepmi"
    seen = []
    inputs.evaluator = lambda x: seen.append(x) or types.SimpleNamespace(features=x.flatten(1), logits=x.flatten(1))
    (aa1, *_) = AttackAccuracy(AttackAccuracyParams()).compute(inputs, RunContext())
    assert aa1.details["pipeline"] == "brepmi"
    assert torch.equal(seen[0], low2high(recon, 16))
    (knn,) = KNNDistance(KNNParams()).compute(inputs, RunContext())
    assert knn.details["pipeline"].startswith("standard (") and "BREP-MI" in knn.details["pipeline"]
