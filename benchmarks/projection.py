"""Projected wall time of suites/table1.yaml from the rates `benchmarks/stages.py` measures: one job at a time, and
packed (several jobs side by side on one device, as `mibench run --packing` runs them).

The packed projection replays the runner on the table's job graph: ready jobs in the runner's order
(`Plan.critical_paths`), admitted by the measured footprints (`running.packing.DeviceLedger`), each job's work its
one-at-a-time duration; while n jobs share the device each advances at s(n)/n of its own speed, where s(n) is the
aggregate speed-up measured for n probes of one prior side by side (`packing_probe.corun_speedup`; PLG-MI's cGAN
unless `--corun` names another). That s(n) is measured on one stage and applied to every mix: a model, to be checked
against a packed run's wall time.
"""

from __future__ import annotations

from typing import Any

from benchmarks.packing_probe import packing_profile
from mibench.running.packing import DeviceLedger, PackingBudget, budget_from_profile
from mibench.running.plan import Job, Plan

# The Trap-MID Table 1 protocol (suites/table1.yaml) and CelebA split sizes (spec §1).
PAPER = {
    "train_images": 27018,
    "test_images": 3009,
    "public_images": 30000,
    "attacked_classes": 300,
    "seeds": 5,
    "defenses": ["none", "mid", "bido", "negls", "trap-mid"],
    "attacks": ["gmi", "kedmi", "lomma-gmi", "lomma-kedmi", "plgmi"],
}

# ---------------------------------------------------------------------------------------------------------------------
# Projection


def target_hours(r: dict[str, Any], defense: str) -> float:
    """Hours of one target's paper training under `defense`, from the measured epoch rate."""
    v = r["target_training"][defense]
    return v["paper_epochs"] * PAPER["train_images"] / v["images_per_s"] / 3600


def prior_hours(r: dict[str, Any], label: str) -> float:
    """Hours of one prior's paper training."""
    v = r["priors"][label]
    return v["paper_units"] / v["per_s"] / 3600


def search_hours(r: dict[str, Any], attack: str) -> float:
    """Hours of one inversion: the paper's iterations over the paper's attacked classes."""
    v = r["search"][attack]
    return PAPER["attacked_classes"] / v["classes"] * v["paper_iterations"] / v["iterations_per_s"] / 3600


def project_table1(r: dict[str, Any]) -> dict[str, float]:
    """Hours per stage of suites/table1.yaml on this machine, from the measured rates (one job at a time)."""
    seeds, n_def = PAPER["seeds"], len(PAPER["defenses"])
    targets = seeds * n_def
    hours: dict[str, float] = {}
    hours["targets"] = seeds * sum(target_hours(r, d) for d in PAPER["defenses"])
    # GMI's GAN is target-free (one); KED-MI's GAN, PLG-MI's cGAN and LOMMA's students are per target.
    hours["gmi_gan"] = prior_hours(r, "gmi-wgan-gp")
    hours["kedmi_gans"] = targets * prior_hours(r, "kedmi-gan")
    hours["plgmi_cgans"] = targets * prior_hours(r, "plgmi-cgan")
    hours["lomma_students"] = targets * prior_hours(r, "lomma-students")
    hours["inversion"] = targets * sum(search_hours(r, a) for a in PAPER["attacks"])
    if "metrics" in r:  # small next to the rest; a run may lack it
        m = r["metrics"]
        per_job = 5 * PAPER["attacked_classes"] / m["evaluator_images_per_s"] + m["knn_seconds"]
        hours["measure"] = targets * len(PAPER["attacks"]) * per_job / 3600
    hours["total"] = sum(hours.values())
    return hours


def summary_markdown(r: dict[str, Any]) -> str:
    """The Markdown block BENCHMARKS.md quotes."""
    lines = [f"Machine: {r['machine']}  ", f"Preset: {r['preset']}, mibench {r['mibench']}, torch {r['torch']}", ""]
    lines += ["| stage | rate (median; slowest-fastest) | paper work | projected |", "|---|---:|---:|---:|"]
    tt = r["target_training"]
    for d, v in tt.items():
        if d == "bare_loop":
            continue
        h = target_hours(r, d)
        span = f" ({v['spread']['per_s_min']:.0f}-{v['spread']['per_s_max']:.0f})" if "spread" in v else ""
        lines.append(f"| target {d} | {v['images_per_s']:.0f} img/s{span} | {v['paper_epochs']} epochs | {h:.2f} h |")
    bare = tt.get("bare_loop", r["bare_loop"])
    lines.append(f"| bare PyTorch loop (VGG16) | {bare['images_per_s']:.0f} img/s | | |")
    for label, v in r["priors"].items():
        h = prior_hours(r, label)
        lines.append(f"| prior {label} | {v['per_s']:.2f} {v['unit']}/s | {v['paper_units']} | {h:.2f} h |")
    for a, v in r["search"].items():
        if isinstance(v, dict):
            it = v.get("paper_iterations", 1500)
            h = it / v["iterations_per_s"] * PAPER["attacked_classes"] / v["classes"] / 3600
            lines.append(
                f"| search {a} ({v['classes']} classes) | {v['iterations_per_s']:.2f} it/s | {it} it | {h:.2f} h |"
            )
    if "metrics" in r:
        m = r["metrics"]
        lines.append(f"| evaluator (IR-50 @112) | {m['evaluator_images_per_s']:.0f} img/s | | |")
        lines.append(f"| KNN ({m['knn_fake']} x {m['knn_real']}) | {m['knn_seconds']:.3f} s | | |")
    else:
        lines.append("| metrics | not measured | | |")
    d = r["derived"]
    lines += [
        "",
        f"Harness overhead vs bare loop: {d['harness_overhead']:.1%}. "
        f"Trap-MID training cost vs undefended (per epoch): {d['trap_mid_cost_ratio']:.2f}x (paper: about 5x). "
        f"Batched vs per-class GMI search: {r['search']['batched_speedup']:.1f}x.",
        "",
        "Projected suites/table1.yaml, one job at a time (hours): "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["projection_table1_hours"].items()),
    ]
    packed = r.get("projection_table1_packed")
    if packed:
        gains = ", ".join(f"{n}: {v:.2f}x" for n, v in packed["speedup_by_jobs"].items())
        lines += [
            "",
            f"Packed by the measured footprints (aggregate speed-up of n {r['packing']['corun_prior']} probes side by "
            f"side: {gains}): "
            f"{packed['packed_h']:.1f} h (replayed one job at a time: {packed['one_at_a_time_h']:.1f} h).",
        ]
    else:
        lines += ["", "Packed projection: not measured (run the packing section)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Packed projection

# Which per-target priors each attack of the table needs (GMI's GAN is shared by every target).
ATTACK_PRIORS = {
    "gmi": ["gmi-wgan-gp"],
    "kedmi": ["kedmi-gan"],
    "lomma-gmi": ["gmi-wgan-gp", "lomma-students"],
    "lomma-kedmi": ["kedmi-gan", "lomma-students"],
    "plgmi": ["plgmi-cgan"],
}


def _job(stage: str, key: str, payload: dict[str, Any], deps: tuple[str, ...] = ()) -> Job:
    return Job(stage, key, payload, deps, key)


def table1_graph(r: dict[str, Any]) -> tuple[Plan, dict[str, float]]:
    """The jobs `mibench run suites/table1.yaml` plans (evaluator aside), with each one's hours alone on the device."""
    plan, hours = Plan(suite=None), {}  # type: ignore[arg-type]

    def add(job: Job, h: float) -> Job:
        plan.add(job)
        hours[job.id] = h
        return job

    gmi_gan = add(_job("prior", "gmi-wgan-gp", {"prior": "gmi-wgan-gp"}), prior_hours(r, "gmi-wgan-gp"))
    for seed in range(PAPER["seeds"]):
        for d in PAPER["defenses"]:
            name = f"{d}-{seed}"
            target = add(_job("target", name, {"defense": [{"name": d}]}), target_hours(r, d))
            priors = {"gmi-wgan-gp": gmi_gan}
            for label in ("kedmi-gan", "lomma-students", "plgmi-cgan"):
                job = _job("prior", f"{label}-{name}", {"prior": label}, (target.id,))
                priors[label] = add(job, prior_hours(r, label))
            for a in PAPER["attacks"]:
                deps = (target.id, *(priors[p].id for p in ATTACK_PRIORS[a]))
                add(_job("invert", f"{a}-{name}", {"attack": {"name": a}}, deps), search_hours(r, a))
    return plan, hours


def simulate(plan: Plan, hours: dict[str, float], budget: PackingBudget, speedup: dict[int, float]) -> float:
    """Hours until every job of `plan` is done on one device (see the module docstring)."""
    ledger = DeviceLedger(budget, devices=1)
    weight = plan.critical_paths()
    left = dict(hours)
    finished: set[str] = set()
    pending = list(plan.jobs.values())
    now = 0.0
    while pending or ledger.running[0]:
        ready = [j for j in pending if all(d in finished for d in j.deps)]
        for job in sorted(ready, key=lambda j: -weight[j.id]):
            if ledger.place(job) is not None:
                ledger.start(job, 0)
                pending.remove(job)
        running = [plan.jobs[i] for i in ledger.running[0]]
        n = len(running)
        pace = speedup.get(n, speedup[max(speedup)] if n > max(speedup) else n) / n  # of a job's own speed
        step = min(left[j.id] for j in running) / pace
        now += step
        for job in running:
            left[job.id] -= step * pace
            if left[job.id] <= 1e-12:
                ledger.finish(job, 0)
                finished.add(job.id)
    return now


def packed_projection(r: dict[str, Any]) -> dict[str, Any] | None:
    """Table 1's hours one job at a time and packed by the measured co-run speed-ups, admitted by the budget of the
    very profile `--packing-out` writes (so the replay admits what `mibench run --packing` would); None without a
    packing measurement."""
    pk = r.get("packing")
    if not pk or not pk.get("device_memory_gib"):
        return None
    profile = packing_profile(r.get("machine", ""), pk["device_memory_gib"], pk["footprints"])
    budget = budget_from_profile(profile, "the packing section")
    speedup = {int(n): v["speedup"] for n, v in pk["corun"].items()}
    plan, hours = table1_graph(r)
    alone = simulate(plan, hours, PackingBudget({}, budget.device_memory_gib, 1.0, 1), {1: 1.0})
    return {"one_at_a_time_h": alone, "packed_h": simulate(plan, hours, budget, speedup), "speedup_by_jobs": speedup}
