"""VMI parity: the released Glow flow (`--flow_glow 1`: shuffle, additive coupling, actnorm) against mibench's.

The official flow is built by `likelihood_model.load_glow` with the run script's settings (ELU, 100 hidden units in
the run; 8 here), one level (mibench builds no multi-scale levels: FIDELITY.md), K = 3 steps on a 6-d latent.
The only glue: `torch._six` (read by the unused spectral-norm module) stands in as `collections.abc`.
Its shuffles and convolution weights are the official code's own draws from the global stream after
torch.manual_seed(0); they are read out of the official modules and handed to mibench. Then, on both sides:

1. the actnorms' data initialisation on one encode pass of 100 seeded N(0, I) samples (FlowMiner's `init_z`);
2. every parameter moved by seeded noise (a trained flow: non-zero couplings, learned output scales);
3. samples `reverse_flow(eps)` of seeded eps, and the density `logp` of the samples and of seeded points.

    MIBENCH_OFFICIAL_VMI=DIR python -m parity.vmi
"""

from __future__ import annotations

import collections.abc

import torch

from mibench.inversion.flows import ClassFlows
from parity._harness import (
    largest_difference,
    official_checkout,
    official_modules,
    seeded,
    stub_modules,
    write_golden,
)

REPO, COMMIT = "wangkua1/vmi", "f308752"
DIM, STEPS, HIDDEN, INIT = 6, 3, 8, 100

# mibench's parameter -> (official module path in a FlowStep, attribute), all as steps x 1 x ... arrays
ACTNORMS = {
    "bias": ("actnorm", "bias"), "log_scale": ("actnorm", "logs"),
    "h1_bias": ("block.0.actnorm", "bias"), "h1_log_scale": ("block.0.actnorm", "logs"),
    "h2_bias": ("block.2.actnorm", "bias"), "h2_log_scale": ("block.2.actnorm", "logs"),
}  # fmt: skip


def official_parameters(flow) -> dict[str, torch.Tensor]:
    """The official flow's parameters in mibench's layout (one class): a 3x3 'same' convolution on a 1 x 1 image is
    its centre tap, i.e. a linear layer; actnorm and output scales are per channel."""
    steps = list(flow.flow.layers)

    def stacked(read) -> torch.Tensor:
        return torch.stack([read(step) for step in steps])[:, None]  # steps x 1 (class) x ...

    def attribute(step, path: str, name: str) -> torch.Tensor:
        return getattr(step.get_submodule(path), name).detach().flatten()[None]

    out = {ours: stacked(lambda s, p=path, n=name: attribute(s, p, n)) for ours, (path, name) in ACTNORMS.items()}
    out["w1"] = stacked(lambda s: s.block[0].conv.weight.detach()[:, :, 1, 1].T)
    out["w2"] = stacked(lambda s: s.block[2].conv.weight.detach()[:, :, 0, 0].T)
    out["w3"] = stacked(lambda s: s.block[4].conv.weight.detach()[:, :, 1, 1].T)
    out["b3"] = stacked(lambda s: s.block[4].conv.bias.detach()[None])
    out["out_log_scale"] = stacked(lambda s: s.block[4].logs.detach().flatten()[None])
    out["permutations"] = torch.stack([s.shuffle.permute_indices.detach() for s in steps])[None]  # 1 x steps x dim
    return out


def flows_from(golden: dict[str, torch.Tensor]) -> ClassFlows:
    """Mibench's flow with the official shuffles and initial weights, its actnorms data-initialised on init_z."""
    flows = ClassFlows(golden["permutations"], HIDDEN, [golden["drawn_w1"], golden["drawn_w2"]]).double()
    flows.initialise_actnorms(golden["init_z"][None].double())
    return flows


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mibench's initialisation, samples and densities on the golden's draws and parameters."""
    flows = flows_from(golden)
    result = {f"initialised_{name}": getattr(flows, name).detach().float() for name in ACTNORMS}
    with torch.no_grad():
        for name, parameter in flows.named_parameters():
            parameter.copy_(golden[f"trained_{name}"])
        x, log_q = flows(golden["eps"][None].double())
        result |= {
            "samples": x[0].float(),
            "sample_log_q": log_q[0].float(),
            "point_log_q": flows.log_prob(golden["points"][None].double())[0].float(),
        }
    return result


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    # the spectral-norm module (imported, never used: sn=False) reads torch._six, gone from current torch
    stub_modules(torch___six={"container_abcs": collections.abc})
    with official_modules(path, "likelihood_model", "utils", "flow", "flow.model", "flow.modules"):
        import likelihood_model

        torch.manual_seed(0)  # the official shuffles and N(0, 0.05^2) weights come from the global stream
        flow = likelihood_model.load_glow(
            inp_dim=DIM, hidden_channels=HIDDEN, K=STEPS, sn=False, nonlin="elu", flow_permutation="shuffle",
            flow_coupling="additive", flow_L=1, use_actnorm=True,
        ).double()  # fmt: skip
    drawn = official_parameters(flow)
    init_z = torch.randn(INIT, DIM, generator=seeded(1), dtype=torch.float64)
    with torch.no_grad():
        flow(init_z[..., None, None])  # FlowMiner: one forward (encode) pass data-initialises every actnorm
    initialised = official_parameters(flow)
    noise = seeded(2)
    with torch.no_grad():
        for parameter in flow.parameters():  # a trained flow: every parameter moved (couplings, output scales)
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=noise, dtype=parameter.dtype))
    trained = official_parameters(flow)
    eps = torch.randn(5, DIM, generator=seeded(3), dtype=torch.float64)
    points = torch.randn(5, DIM, generator=seeded(4), dtype=torch.float64) * 1.5
    with torch.no_grad():
        samples = flow.reverse_flow(eps[..., None, None], None, temperature=1)
        sample_log_q = flow(samples)  # the official logp of its own samples (return_ll_only)
        point_log_q = flow(points[..., None, None])
    # the first hidden actnorm's bias is -mean(x1 W1) over standardised x1: zero up to rounding, not compared
    official = {f"initialised_{name}": initialised[name].float() for name in ACTNORMS if name != "h1_bias"}
    official |= {
        "samples": samples.flatten(1).float(),
        "sample_log_q": sample_log_q.float(),
        "point_log_q": point_log_q.float(),
    }
    golden = {
        "permutations": drawn["permutations"],
        "drawn_w1": drawn["w1"],
        "drawn_w2": drawn["w2"],
        "init_z": init_z,
        "eps": eps,
        "points": points,
        **{f"trained_{name}": value for name, value in trained.items() if name != "permutations"},
    }
    write_golden(
        "vmi",
        {**golden, **official},
        outputs=sorted(official),
        method="vmi",
        repository=REPO,
        commit=COMMIT,
        files=["likelihood_model.py", "flow/model.py", "flow/modules.py"],
        functions=[
            "load_glow (flow_glow 1: shuffle, additive, actnorm, ELU)",
            "Glow forward (logp), reverse_flow (samples)",
            "ActNorm data initialisation (FlowMiner's init pass)",
        ],
        units="the data initialisation of every actnorm (the steps' and the coupling networks' hidden ones) on 100 "
        "N(0, I) samples; samples (reverse_flow: coupling^-1, un-shuffle, actnorm^-1 per step in reverse) and "
        "their log-density; the log-density of given points (encode); 3 steps, 6-d latent, 8 hidden units",
        injected="the official shuffles and N(0, 0.05^2) conv weights (global stream after torch.manual_seed(0)) "
        "read out of its modules and given to mibench; init samples, parameter moves, eps and points seeded "
        "and given to both; float64 on both sides",
        not_covered="Glow's multi-scale levels (flow_L 3, Split2d priors: not built, FIDELITY.md), the training "
        "loop (SGD, the attack and KL terms), 100 hidden units and 10 steps (the same layers, more of them)",
        difference=largest_difference(ours({**golden, **official}), official),
    )


if __name__ == "__main__":
    main()
