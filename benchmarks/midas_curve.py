"""MIDAS utility curve on the mini digits: target accuracy over the official bit-error rate grids.

Trains the mini-MNIST target (suites/mini-mnist.yaml: tiny-cnn, 8 epochs, GMI's digits 0-4) once, then measures its
test accuracy deployed from approximate memory at every rate of MIDAS's grids (`DEEP_RATES`, `SHALLOW_RATES`), one
corrupted copy per trial, several trials, for the official fixed-point model on the FC layers and on every layer, and
mibench's earlier float32 per-query model at its small rates for contrast.

    python benchmarks/midas_curve.py [--trials 3]

Results go to benchmarks/results/midas-curve.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.data.digits import DigitsProtocolParams, MNIST5k
from mibench.defenses.midas import DEEP_RATES, MIDAS, SHALLOW_RATES, MIDASParams
from mibench.models.base import build_classifier, freeze
from mibench.training.classifier import evaluate_accuracy, train_classifier


def accuracy(model, data, params: MIDASParams, trial: int) -> float:
    deployed = freeze(MIDAS(params).deploy(model, torch.Generator().manual_seed(trial)))
    return evaluate_accuracy(deployed, data.private_test, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = MNIST5k(DigitsProtocolParams()).load(None, 32, None)
    model = build_classifier("tiny-cnn", {"width": 32, "feature_dim": 128}, num_classes=5, in_channels=3, image_size=32)
    spec = TrainSpec(epochs=8, batch_size=64, lr=0.02)
    start = time.perf_counter()
    clean = train_classifier(model, data.private_train, data.private_test, spec, RunContext(seed=0)).test_accuracy
    model = freeze(model)
    rows = []
    grid = sorted(set(DEEP_RATES) | set(SHALLOW_RATES))
    settings = [("fixed-point", "linear", grid), ("fixed-point", "all", DEEP_RATES)]
    settings.append(("float32-per-query", "all", (1e-6, 1e-5, 1e-4)))
    for memory, layers, rates in settings:
        for rate in rates:
            params = MIDASParams(bit_error_rate=rate, memory=memory, layers=layers)
            accs = [accuracy(model, data, params, t) for t in range(args.trials)]
            rows.append({"memory": memory, "layers": layers, "rate": rate, "acc": accs})
            mean = sum(accs) / len(accs)
            print(f"{memory:18} {layers:6} rate {rate:.3e}  acc {100 * mean:5.1f}  (trials {accs})", flush=True)
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "clean_accuracy": clean,
        "trials": args.trials,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    path = Path(__file__).parent / "results" / "midas-curve.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"clean accuracy {100 * clean:.1f}%; written to {path}")


if __name__ == "__main__":
    main()
