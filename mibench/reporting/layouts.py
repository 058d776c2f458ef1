"""Table layouts: which metrics fill which columns of each table `mibench report` renders.

A column is filled by the first of its metrics present in the records; Table 1's layout serves most of the Trap-MID
paper's tables. Stand-in Fréchet distances are labelled as what they are, never as FID.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A table column: the first of `metrics` present in the records fills it."""

    metrics: tuple[str, ...]
    label: str


# What fills a FID column, in order of preference; anything but "fid" is labelled as the stand-in it is.
FID_LIKE = ("fid", "fd_inception", "fd_effnet_lite0", "fd_evaluator")

LAYOUTS: dict[str, tuple[Column, ...]] = {
    "table1": (
        Column(("acc",), "Acc"),
        Column(("robust_acc",), "Robust Acc"),  # only where a suite measures it (robust-accuracy: AT-AT's view)
        Column(("aa1",), "AA-1"),
        Column(("aa5",), "AA-5"),
        Column(("knn_dist",), "KNN Dist"),
        Column(FID_LIKE, "FID"),
    ),
    # Table 4 (adaptive attacks against Trap-MID) and Table 17 (Trap-MID with NegLS) use Table 1's columns.
    "table3": (  # synthetic distribution: where each reconstruction's nearest real image lies
        Column(("acc",), "Acc"),
        Column(("aa1",), "AA-1"),
        Column(("nn_private_share",), "NN private"),
    ),
    "table9": (Column(("acc",), "Acc"), Column(("train_time_s",), "Training time (s)")),
    "table11": (
        Column(("acc",), "Acc"),
        Column(("facenet_dist",), "FaceNet Dist"),
        Column(("precision",), "Precision"),
        Column(("recall",), "Recall"),
        Column(("density",), "Density"),
        Column(("coverage",), "Coverage"),
    ),
    "table18": (Column(("acc",), "Acc"), Column(("initial_rounds",), "Init. iterations"), Column(("aa1",), "AA-1")),
    # MIDAS (Xu et al. 2022): utility and inversion success against the bit-error rate (one row per rate).
    "midas": (
        Column(("acc",), "Acc"),
        Column(("aa1",), "AA-1"),
        Column(("pcc",), "PCC"),
        Column(("pcc_ratio",), "PCC / clean"),
    ),
    # Defenses with a privacy budget (DP-SGD's spent epsilon) or a frozen share (TL-DMI) beside utility and attacks.
    "privacy": (
        Column(("dp_epsilon",), "ε (DP)"),
        Column(("acc",), "Acc"),
        Column(("aa1",), "AA-1"),
        Column(("aa5",), "AA-5"),
        Column(("knn_dist",), "KNN Dist"),
        Column(FID_LIKE, "FID"),
    ),
    "trapdoor": (
        Column(("acc",), "Acc"),
        Column(("trapdoor_success",), "Trapdoor success"),
        Column(("aa1",), "AA-1"),
        Column(("trapdoor_recall",), "Trapdoor recall"),
        Column(("trapdoor_auc",), "Trapdoor AUC"),
        Column(("adv_dsr_linf",), "Adv. DSR (Linf)"),
        Column(("adv_dsr_l2",), "Adv. DSR (L2)"),
    ),
}
# Tables 2 (LOMMA), 4 (adaptive PLG-MI++), 5-8 (TeD variants, trigger-optimisation, blend-ratio and loss-weight
# ablations), 10 (best and worst runs, see `extreme_runs`), 12-13 (Face.evoLVe / IR-152 targets), 14 (FFHQ public
# data), 15-16 (PLG-MI+ with CelebA / FFHQ public data) and 17 (Trap-MID with NegLS) use Table 1's columns; Table 19
# (PPA at 224x224) adds the FaceNet feature distance; Table 20 is PPA's PRDC.
for _number in (2, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15, 16, 17):
    LAYOUTS[f"table{_number}"] = LAYOUTS["table1"]
LAYOUTS["table19"] = (*LAYOUTS["table1"][:4], Column(("facenet_dist",), "FaceNet Dist"), *LAYOUTS["table1"][4:])
LAYOUTS["table20"] = tuple(c for c in LAYOUTS["table11"] if c.metrics != ("facenet_dist",))

# Columns whose values depend on the evaluation protocol (standard or published pipelines).
PROTOCOL_METRICS = {"aa1", "aa5", "knn_dist", "fid", "precision", "recall", "density", "coverage", "facenet_dist"}

# Column headers for metrics that stand in for the layout's own (never call a non-Inception FD "FID").
STAND_IN_LABELS = {"fd_evaluator": "FD-eval", "fd_inception": "FD-Inception", "fd_effnet_lite0": "FD-EffNetLite0"}
STAND_IN_NOTES = {
    "fd_evaluator": "FD-eval is the Fréchet distance on evaluation-model features, not Inception-v3 FID",
    "fd_inception": "FD-Inception uses Inception-v3 weights other than the standard FID file (see records)",
    "fd_effnet_lite0": "FD-EffNetLite0 is the Fréchet distance on ImageNet EfficientNet-Lite0 features, not FID",
}
