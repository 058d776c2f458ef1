"""The MIDAS shallow setting end to end: AT&T-shaped grey 112x92 faces, the notebook's linear MLP and MI-Face, PCC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mibench.api.records import RECORDS_FILE, read_records
from mibench.cli import main
from mibench.metrics.functional import class_mean_pearson, pearson_correlation


def test_pearson_correlation_closed_forms():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert pearson_correlation(a, 2 * a + 7).item() == pytest.approx(1.0)  # invariant to scale and shift
    assert pearson_correlation(a, -a).item() == pytest.approx(-1.0)
    b = torch.tensor([[1.0, -1.0, -1.0, 1.0]])  # orthogonal to the centred ramp
    assert pearson_correlation(a, b).item() == pytest.approx(0.0, abs=1e-12)
    assert pearson_correlation(a, torch.ones(1, 4)).isnan().all()  # a constant image has no correlation
    real = torch.cat([a, -a, b]).view(3, 1, 2, 2)
    per_class = class_mean_pearson(a.view(1, 1, 2, 2), torch.tensor([0]), real, torch.tensor([0, 0, 1]))
    assert per_class.item() == pytest.approx(0.0)  # (1 + -1) / 2: the mean over the class's two images


def _att_fixture(root, identities=40, per_identity=10, seed=0):
    """Folders s1..s40 of 112x92 grey PGM files: each identity a smooth template plus per-image noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:92] / 20.0
    for i in range(1, identities + 1):
        folder = root / f"s{i}"
        folder.mkdir(parents=True)
        a, b, c = rng.uniform(0.5, 2.0, 3)
        template = 128 + 100 * np.sin(a * yy + c) * np.cos(b * xx + 3 * c)
        for j in range(1, per_identity + 1):
            img = np.clip(template + rng.normal(0, 8, template.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img, mode="L").save(folder / f"{j}.pgm")


@pytest.mark.slow
def test_midas_suite_runs_on_an_att_shaped_fixture(tmp_path, monkeypatch, capsys):
    _att_fixture(tmp_path / "att")
    monkeypatch.setenv("ATT_ROOT", str(tmp_path / "att"))
    suite = yaml.safe_load(Path("suites/midas.yaml").read_text())
    # The shipped suite, shortened: one trial, two rates, a few epochs.
    suite["seeds"] = [0]
    suite["target"]["train"]["epochs"] = 8  # the notebook's lr 1e-3 and batch 128, fewer epochs
    suite["evaluator"]["train"]["epochs"] = 3
    suite["evaluator"]["params"] = {"width": 8, "blocks": 1, "feature_dim": 32}
    suite["defenses"] = [suite["defenses"][0], suite["defenses"][1], suite["defenses"][-1]]  # none, 2^-12, 2^-3
    suite["attacked_classes"] = 8
    suite["output"] = {"dir": str(tmp_path / "run"), "cache": str(tmp_path / "cache")}
    path = tmp_path / "midas.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    assert main(["run", str(path)]) == 0
    records = read_records(tmp_path / "run" / RECORDS_FILE)
    value = {(r.defense, r.metric): r.value for r in records}
    acc_clean, acc_low, acc_high = (value[(d, "acc")] for d in ("-", "MIDAS 2^-12", "MIDAS 2^-3"))
    assert acc_clean > 0.5  # 40 identities: chance is 0.025
    assert acc_low >= acc_clean - 0.1 > acc_high  # 2^-12 barely moves accuracy; 2^-3 breaks it
    assert {("-", "pcc"), ("MIDAS 2^-3", "pcc")} <= set(value)
    pcc_details = next(r.details for r in records if r.metric == "pcc")
    assert pcc_details["pairing"].startswith("mean over the class's private all")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run"), "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "PCC" in table and "MIDAS 2^-3" in table
    # the deep notebook's PCC ratio to the clean baseline (cell 35) beside PCC
    from mibench.reporting.tables import with_pcc_ratio

    ratio = {r.defense: r.value for r in with_pcc_ratio(records) if r.metric == "pcc_ratio"}
    assert ratio["-"] == 1.0
    assert ratio["MIDAS 2^-3"] == pytest.approx(value[("MIDAS 2^-3", "pcc")] / value[("-", "pcc")])
    assert "PCC / clean" in table


def test_pcc_and_pixel_mse_pair_each_reconstruction_with_its_victim():
    from mibench.api.attack import Reconstructions
    from mibench.api.context import RunContext
    from mibench.api.metric import MeasureInputs
    from mibench.data.base import DataBundle, ImageSet, to_float
    from mibench.metrics.pcc import PCCParams, PearsonCorrelation, PixelMSE
    from mibench.params import NoParams

    gen = torch.Generator().manual_seed(0)
    train = ImageSet(torch.randint(20, 230, (4, 1, 4, 4), generator=gen, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    test = ImageSet(torch.randint(20, 230, (2, 1, 4, 4), generator=gen, dtype=torch.uint8), torch.tensor([0, 1]))
    data = DataBundle(train, test, train, 2, "tiny")
    victims = torch.tensor([1, 4])  # train image 1, then test image 0 (training set first, then test set)
    truth = torch.cat([to_float(train.images[1:2]), to_float(test.images[:1])])
    recon = Reconstructions(truth * 2 + 0.1, torch.tensor([0, 0]), torch.tensor([0, 1]), victims=victims)
    inputs = MeasureInputs(
        target=torch.nn.Identity(), evaluator=torch.nn.Identity(), evaluator_accuracy=1.0, data=data, eval_data=data,
        classes=torch.tensor([0]), reconstructions=recon, device=torch.device("cpu"),
    )  # fmt: skip
    (pcc,) = PearsonCorrelation(PCCParams()).compute(inputs, RunContext())
    assert pcc.value == pytest.approx(1.0) and pcc.details["pairing"] == "own victim image"  # affine copies
    (mse,) = PixelMSE(NoParams()).compute(inputs, RunContext())
    assert mse.value == pytest.approx(((truth + 0.1) ** 2).mean().item()) and mse.higher_is_better is True
    recon.victims = None
    assert PixelMSE(NoParams()).compute(inputs, RunContext()) == []  # nothing to pair without victims
