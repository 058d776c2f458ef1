"""Pure metric functions: tensors in, numbers out. Each is tested against a brute-force or scipy oracle."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean per row: is `labels[i]` among the `k` largest `logits[i]`? (k is capped at the number of classes)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose label is in the top-k logits (AA-k when `logits` come from the evaluation model)."""
    if logits.shape[0] == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    return topk_correct(logits, labels, k).double().mean().item()


def nearest_same_class_sq_distance(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    references: torch.Tensor,
    reference_labels: torch.Tensor,
    chunk: int = 1024,
) -> torch.Tensor:
    """For each query, the squared L2 distance to the nearest reference of the same label (float64, N values).

    This is the per-image term of GMI's "KNN Dist" (Zhang et al. 2020; spec §6.2): squared, not rooted, and searched
    only among private training images of the reconstruction's intended class.
    """
    queries, references = queries.double(), references.double()
    out = torch.empty(queries.shape[0], dtype=torch.float64, device=queries.device)
    for label in query_labels.unique():
        q_idx = (query_labels == label).nonzero().squeeze(1)
        refs = references[reference_labels == label]
        if refs.shape[0] == 0:
            raise ValueError(f"no reference images of class {int(label)} to measure KNN distance against")
        ref_sq = (refs * refs).sum(1)
        for start in range(0, q_idx.numel(), chunk):
            idx = q_idx[start : start + chunk]
            q = queries[idx]
            d = (q * q).sum(1, keepdim=True) + ref_sq.view(1, -1) - 2.0 * q @ refs.T
            out[idx] = d.min(dim=1).values.clamp_min(0.0)
    return out


def knn_distance(
    queries: torch.Tensor, query_labels: torch.Tensor, references: torch.Tensor, reference_labels: torch.Tensor
) -> float:
    """Mean over queries of `nearest_same_class_sq_distance` (GMI's KNN Dist)."""
    return nearest_same_class_sq_distance(queries, query_labels, references, reference_labels).mean().item()


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (ddof 1, as numpy's `cov`) of N x D features, in float64."""
    x = features.double()
    if x.shape[0] < 2:
        raise ValueError("Fréchet distance needs at least 2 samples per set")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(matrix)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, Eq. in Sec. 3.3).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}). The trace term is computed as
    tr((S1^{1/2} S2 S1^{1/2})^{1/2}) with symmetric eigendecompositions in float64, which equals the scipy `sqrtm`
    form for positive semi-definite inputs and never produces the complex parts `sqrtm` does.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return (diff @ diff + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt).item()


def frechet_distance_of_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets; NaN when a feature is not finite."""
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        return float("nan")
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of a (N x D) and b (M x D), in float64."""
    a, b = a.double(), b.double()
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1).view(1, -1) - 2.0 * a @ b.T
    return sq.clamp_min(0).sqrt()


def kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (index k of the sorted row; index 0 is itself)."""
    return pairwise_distances(features, features).kthvalue(k + 1, dim=1).values


def prdc_naeem(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage of Naeem et al. (ICML 2020), as the `prdc` package computes them.

    Membership of a k-NN ball is strict ("<"); precision and recall test every ball of the other set.
    """
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    d = pairwise_distances(real, fake)  # real x fake
    inside_real = d < real_radii[:, None]
    return {
        "precision": inside_real.any(0).double().mean().item(),
        "recall": (d < fake_radii[None, :]).any(1).double().mean().item(),
        "density": inside_real.sum(0).double().mean().item() / k,
        "coverage": (d.min(1).values < real_radii).double().mean().item(),
    }


def prdc_nearest(real: torch.Tensor, fake: torch.Tensor, k: int = 3, density_over: str = "fakes") -> dict[str, float]:
    """The PPA/MIBench variant (spec §6.4): precision and recall test only the nearest neighbour's ball, with "<=".

    precision: fakes whose nearest real n has d(fake, n) <= radius_real(n); recall: the same with the roles swapped;
    density: (1/k) mean over fakes of the number of real balls containing it (Naeem's normalisation), or with
    `density_over="reals"` the same count averaged over the reals, as PPA's and MIBench's code computes it (they
    differ by n_fake / n_real); coverage: reals whose ball holds a fake.
    """
    real_radii, fake_radii = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    d = pairwise_distances(real, fake)
    nearest_real = d.argmin(0)
    nearest_fake = d.argmin(1)
    cols = torch.arange(d.shape[1], device=d.device)
    rows = torch.arange(d.shape[0], device=d.device)
    return {
        "precision": (d[nearest_real, cols] <= real_radii[nearest_real]).double().mean().item(),
        "recall": (d[rows, nearest_fake] <= fake_radii[nearest_fake]).double().mean().item(),
        "density": (d <= real_radii[:, None]).sum().item() / (k * d.shape[1 if density_over == "fakes" else 0]),
        "coverage": (d.min(1).values <= real_radii).double().mean().item(),
    }


def roc_auc(negatives: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of scores separating positives (higher) from negatives: P(pos > neg) + P(=)/2.

    The Mann-Whitney form, which equals sklearn's `roc_auc_score` with ties counted half.
    """
    neg, pos = negatives.double().flatten(), positives.double().flatten()
    if neg.numel() == 0 or pos.numel() == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative score")
    scores = torch.cat([neg, pos])
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64, device=scores.device)
    for value in scores.unique():  # average ranks of ties
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    u = ranks[neg.numel() :].sum() - pos.numel() * (pos.numel() + 1) / 2
    return (u / (pos.numel() * neg.numel())).item()


def nearest_set_share(
    queries: torch.Tensor, first: torch.Tensor, second: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """Per query, True when its nearest neighbour (squared L2) over first U second lies in `first`."""
    q = queries.double()
    out = torch.empty(q.shape[0], dtype=torch.bool, device=q.device)
    for start in range(0, q.shape[0], chunk):
        part = q[start : start + chunk]
        d1 = pairwise_distances(part, first).min(1).values
        d2 = pairwise_distances(part, second).min(1).values
        out[start : start + chunk] = d1 <= d2
    return out


def pearson_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair of `a` and `b` (N x ... each), over all pixels of the row (float64).

    The MIDAS notebooks' PCC: sum((a - mean a)(b - mean b)) / sqrt(sum (a - mean a)^2 sum (b - mean b)^2), one mean
    per image (over channels and pixels). A constant image has no defined correlation: NaN.
    """
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    da, db = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (da * db).sum(1) / (da.pow(2).sum(1) * db.pow(2).sum(1)).sqrt()


def class_mean_pearson(
    recon: torch.Tensor, recon_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor
) -> torch.Tensor:
    """Per reconstruction, the mean PCC with every real image of its class (MIDAS shallow notebook, cell 30)."""
    out = torch.empty(len(recon), dtype=torch.float64)
    for i, (image, label) in enumerate(zip(recon, recon_labels, strict=True)):
        same = real[real_labels == label]
        out[i] = pearson_correlation(image.expand_as(same), same).mean() if len(same) else float("nan")
    return out
