"""What each job stage does: build inputs from upstream artifacts, call the method, publish the artifact.

Every stage reads only its job's payload and the store, so any process (or cluster node) can run any job. An
artifact folder holds `job.json` (the payload), `values.json` (measurements to turn into records), tensor files,
and `done.json` (written last by the store).
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mibench
from mibench.api.attack import Attack, DataInfo, Reconstructions
from mibench.api.context import RunContext
from mibench.api.defense import TrainedTarget
from mibench.api.metric import MeasureInputs, Measurement
from mibench.api.oracle import DefenderKnowledge, TargetOracle
from mibench.api.progress import Reporter
from mibench.api.recipe import TrainSpec
from mibench.checkpoints import check_released_accuracy, load_strict, planned_files, read_state_dict
from mibench.data.base import DataBundle, ImageSet, to_float
from mibench.errors import DataError
from mibench.hashing import content_key, derive_seed
from mibench.models.base import Classifier, build_classifier, freeze
from mibench.registry import ATTACKS, DATASETS, DEFENSES, METRICS, Registry, build_params
from mibench.running.execution import apply_execution, configure_device, isolated_global_rng, seed_everything
from mibench.running.plan import Job
from mibench.running.store import ArtifactStore, write_json_atomic
from mibench.training.classifier import evaluate_accuracy, precision_label, train_classifier
from mibench.training.stack import DefenseStack, trained_prefix
from mibench.training.trapdoor import find_triggers, trapdoor_signatures


class Workspace:
    """Per-process state shared by the jobs it runs: the store, the device, and memoised data and models."""

    def __init__(self, store: ArtifactStore, device: torch.device, reporter: Reporter):
        self.store = store
        self.device = device
        self.reporter = reporter
        self._memo: dict[str, Any] = {}
        self.execution: dict[str, Any] = {}  # the settings of the job being run (provenance)
        self.lock_timeout: float | None = None  # seconds to wait for another process's build; None: as long as it takes
        configure_device(device)

    def memo(self, key: str, build: Any) -> Any:
        """Build once per process, without touching the global random streams.

        A job's randomness must not depend on whether an earlier job of this process loaded the same thing.
        """
        if key not in self._memo:
            with isolated_global_rng():
                self._memo[key] = build()
        return self._memo[key]

    def data(self, payload: dict[str, Any], runtime: dict[str, Any]) -> DataBundle:
        """The data bundle a payload describes (loaded once per process)."""
        return self.memo(f"data/{content_key(payload)}", lambda: load_data(payload, runtime, self.store.root / "data"))


def instantiate(registry: Registry, spec: dict[str, Any]) -> Any:
    """A method object from its payload entry {name, version, params}."""
    cls = registry.get(spec["name"])
    return cls(build_params(cls, spec["params"]))


def defense_stack(specs: list[dict[str, Any]]) -> DefenseStack:
    """The stacked defenses of a target payload."""
    return DefenseStack([instantiate(DEFENSES, s) for s in specs])


def load_data(payload: dict[str, Any], runtime: dict[str, Any], cache_dir: Path) -> DataBundle:
    """Load the private/public bundle, taking public images from another dataset when the suite says so."""
    dataset = instantiate(DATASETS, payload["dataset"])
    size = payload["image_size"] if isinstance(payload["image_size"], int) else tuple(payload["image_size"])
    root = Path(runtime["root"]) if runtime.get("root") else None
    bundle = dataset.load(root, size, cache_dir)
    if payload.get("public"):
        public = instantiate(DATASETS, payload["public"])
        public_root = Path(runtime["public_root"]) if runtime.get("public_root") else None
        bundle = replace(bundle, public=public.load_public(public_root, size, cache_dir), public_identities=None)
    return bundle


def build_network(arch: dict[str, Any], data: DataBundle) -> nn.Module:
    """The architecture of a payload, sized for `data`."""
    return build_classifier(
        arch["name"],
        arch["params"],
        num_classes=data.num_classes,
        in_channels=data.channels,
        image_size=data.image_size,
    )


@cache
def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(mibench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def versions(payload: dict[str, Any]) -> dict[str, Any]:
    """Software versions and the method versions a payload names."""
    methods = {}
    entries = [payload[k] for k in ("attack", "architecture") if isinstance(payload.get(k), dict)]
    entries += payload.get("defense", []) + payload.get("metrics", [])
    for m in entries:
        methods[m["name"]] = m["version"]
    return {"mibench": mibench.__version__, "torch": torch.__version__, "git": _git_revision(), "methods": methods}


def _measurement_json(m: Measurement) -> dict[str, Any]:
    from mibench.api.records import clean_value

    return {
        "metric": m.metric,
        "value": clean_value(m.value),
        "higher_is_better": m.higher_is_better,
        "unit": m.unit,
        "details": m.details,
    }


def read_values(store: ArtifactStore, stage: str, key: str) -> list[dict[str, Any]]:
    """The measurements a finished job published (verified against its marker)."""
    return store.read_json(stage, key, "values.json")


# ---------------------------------------------------------------------------------------------------------------------
# Loading artifacts


def load_evaluator(ws: Workspace, key: str, runtime: dict[str, Any]) -> tuple[nn.Module, float]:
    """The frozen evaluation model and its test accuracy."""

    def build() -> tuple[nn.Module, float]:
        payload = ws.store.read_json("evaluator", key, "job.json")
        data = ws.data(payload["data"], runtime)
        model = build_network(payload["architecture"], data)
        model.load_state_dict(ws.store.load_tensors("evaluator", key, "model.pt"))
        acc = next(v["value"] for v in read_values(ws.store, "evaluator", key) if v["metric"] == "evaluator_acc")
        return freeze(model).to(ws.device), acc

    return ws.memo(f"evaluator/{key}", build)


def load_target(ws: Workspace, key: str, runtime: dict[str, Any]) -> tuple[nn.Module, DataBundle]:
    """The deployed, frozen target: architecture, defense wrap, strict weights, defense state, deploy."""

    def build() -> tuple[nn.Module, DataBundle]:
        payload = ws.store.read_json("target", key, "job.json")
        data = ws.data(payload["data"], runtime)
        defense = defense_stack(payload["defense"])
        model = defense.wrap(build_network(payload["architecture"], data))
        # a deploy-only defense's target keeps no weights of its own: they are its base target's (see run_target)
        model.load_state_dict(ws.store.load_tensors("target", payload.get("base", key), "model.pt"))
        defense.restore(model, ws.store.load_tensors("target", key, "extras.pt"))
        # The released model's own randomness (MIDAS's one draw of bit errors per trial) is seeded by the target key,
        # so the accuracy test, every attack and every measurement see the same deployed copy.
        return freeze(defense.deploy(model, derive_seed(key, "deploy"))).to(ws.device), data

    return ws.memo(f"target/{key}", build)


def data_info(data: DataBundle) -> DataInfo:
    """Shape facts of a bundle, for building attack networks."""
    return DataInfo(data.channels, data.image_size, data.num_classes)


def defender_knowledge(ws: Workspace, key: str, runtime: dict[str, Any]) -> DefenderKnowledge:
    """What an adaptive attack is told about target `key`: Trap-MID/TeD trapdoor signatures when it has triggers.

    The signatures are computed on the private training set with the defender's own triggers (the oracle
    knowledge of PLG-MI++), from a generator seeded by the target key.
    """

    def build() -> DefenderKnowledge:
        model, data = load_target(ws, key, runtime)
        triggers = find_triggers(ws.store.load_tensors("target", key, "extras.pt"))
        if triggers is None:
            return DefenderKnowledge()
        pattern, mask = (t.to(ws.device) for t in triggers)
        images = to_float(data.private_train.images, ws.device)
        generator = torch.Generator().manual_seed(derive_seed(key, "signatures"))
        return DefenderKnowledge(trapdoor_signatures(model, images, pattern, mask, generator).cpu())

    return ws.memo(f"knowledge/{key}", build)


def make_oracle(
    model: nn.Module, attack: Attack, data: DataBundle, knowledge: DefenderKnowledge | None = None
) -> TargetOracle:
    """The target behind the access the attack declared (and the defense knowledge, for adaptive attacks)."""
    shape = data.image_shape
    return TargetOracle(
        model,
        attack.access,
        num_classes=data.num_classes,
        image_shape=shape,
        defender=knowledge if attack.knows_defense else None,
        victims=(data.private_train, data.private_test) if attack.observes_victims else None,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Stages


def _publish(ws: Workspace, job: Job, files: dict[str, Any], values: list[Measurement], wall_time_s: float) -> None:
    with ws.store.build(job.stage, job.key) as (out, meta):
        for name, obj in files.items():
            if isinstance(obj, Reconstructions):
                obj.save(out / name)
            else:
                torch.save(obj, out / name)
        write_json_atomic(out / "job.json", job.payload)
        write_json_atomic(out / "values.json", [_measurement_json(v) for v in values])
        meta.update(
            label=job.label,
            stage=job.stage,
            key=job.key,
            wall_time_s=wall_time_s,
            device=str(ws.device),
            execution=ws.execution,
            versions=versions(job.payload),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )


def released_state(model: nn.Module, path: str, what: str, sha256: str) -> dict[str, torch.Tensor]:
    """A released checkpoint's tensors under the model's names (the official code's layout translated).

    Only a bare architecture is translated; a defense-wrapped one (MID's bottleneck) must match as saved.
    """
    state = read_state_dict(path, what=what, sha256=sha256)
    return model.from_official_names(state) if isinstance(model, Classifier) else state


def run_evaluator(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """Train the evaluation model on the private data; publish weights and its accuracy."""
    p = job.payload
    data = ws.data(p["data"], job.runtime)
    model = build_network(p["architecture"], data)
    details = {"architecture": p["architecture"]["name"], "n_test": len(data.private_test)}
    if p.get("checkpoint"):
        path = job.runtime["checkpoint_path"]
        load_strict(model, released_state(model, path, "evaluator checkpoint", p["checkpoint"]["sha256"]), path)
        acc = evaluate_accuracy(model.to(ws.device), data.private_test, ws.device)
        published = check_released_accuracy(path, acc, len(data.private_test), "evaluator checkpoint")
        details = {**details, "checkpoint": p["checkpoint"], **({"published_acc": published} if published else {})}
        values = [Measurement("evaluator_acc", acc, None, "fraction", details)]
        _publish(ws, job, {"model.pt": model.state_dict()}, values, 0.0)
        return
    spec = TrainSpec(**p["train"])
    result = train_classifier(model, data.private_train, data.private_test, spec, ctx, description="evaluator")
    values = [
        Measurement(
            "evaluator_acc", result.test_accuracy, None, "fraction", {**details, "best_epoch": result.best_epoch}
        )
    ]
    _publish(ws, job, {"model.pt": model.state_dict()}, values, result.wall_time_s)


def run_target(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """Train a target with a defense; publish weights, defense extras and training time."""
    p = job.payload
    if "base" in p:
        return _finish_on_base(job, ws, ctx)
    data = ws.data(p["data"], job.runtime)
    defense = defense_stack(p["defense"])
    suite_spec = None if p.get("checkpoint") else TrainSpec(**p["train"])
    if suite_spec is None:  # a released target: load it (strictly) instead of training
        model = defense.wrap(build_network(p["architecture"], data))
        path = job.runtime["checkpoint_path"]
        load_strict(model, released_state(model, path, "target checkpoint", p["checkpoint"]["sha256"]), path)
        acc = evaluate_accuracy(model.to(ws.device), data.private_test, ws.device)
        if len(defense.defenses) == 1 and defense.defenses[0].name == "none":  # released as undefended targets
            check_released_accuracy(path, acc, len(data.private_test), "target checkpoint")
        trained = TrainedTarget(model, acc, 0.0)
    else:
        trained = defense.fit(build_network(p["architecture"], data), data, suite_spec, ctx)
    precision = "checkpoint" if suite_spec is None else precision_label(suite_spec, ws.device)
    details = {"device": str(ws.device), "precision": precision}
    if trained.recipe:  # the effective recipe (after the defenses' own) and where the weights started
        start = p["architecture"]["params"].get("pretrained")
        details["recipe"] = {**trained.recipe, "initialisation": Path(start).name if start else "random"}
        details["recipe_source"] = "suite" if trained.recipe == suite_spec.model_dump(mode="json") else "defense"
    values = [Measurement("train_time_s", trained.wall_time_s, False, "seconds", details)]
    values += trained.stats
    files = {"model.pt": trained.model.state_dict(), "extras.pt": trained.extras}
    _publish(ws, job, files, values, trained.wall_time_s)


def _finish_on_base(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """A stack ending in deploy-only defenses: its base target's weights, and the deploy-only members' `finish`.

    Publishes the base's extras with the new members' (no second copy of the weights: `load_target` reads them from
    the base) and the base's measurements, its training time plus the time `finish` took.
    """
    p = job.payload
    data = ws.data(p["data"], job.runtime)
    defense = defense_stack(p["defense"])
    trained = trained_prefix(defense.defenses)
    model = defense.wrap(build_network(p["architecture"], data)).to(ws.device)
    model.load_state_dict(ws.store.load_tensors("target", p["base"], "model.pt"))
    extras = dict(ws.store.load_tensors("target", p["base"], "extras.pt"))
    defense.restore(model, extras, members=trained)
    start = time.perf_counter()
    own, stats = defense.finish(model, data, ctx, start=trained)
    wall = time.perf_counter() - start
    values = []
    for v in read_values(ws.store, "target", p["base"]):
        if v["metric"] == "train_time_s":
            v = {**v, "value": v["value"] + wall, "details": {**v["details"], "base_train_time_s": v["value"]}}
        values.append(Measurement(v["metric"], v["value"], v["higher_is_better"], v["unit"], v["details"]))
    _publish(ws, job, {"extras.pt": {**extras, **own}}, values + stats, wall)


def load_priors(ws: Workspace, attack: Attack, keys: dict[str, str], data: DataBundle) -> Any:
    """The trained priors of an invert job: None, the one module, or {name: module} when there are several."""
    priors = {}
    for name, key in keys.items():
        prior = attack.build_prior(data_info(data), name)
        prior.load_state_dict(ws.store.load_tensors("prior", key, "prior.pt"))
        priors[name] = prior
    if len(priors) <= 1:
        return next(iter(priors.values()), None)
    return priors


def run_prior(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """Train an attack's prior on public data (and the target, if it uses it)."""
    p = job.payload
    data = ws.data(p["data"], job.runtime)
    attack: Attack = instantiate(ATTACKS, job.runtime["builder"])
    prior = attack.build_prior(data_info(data), p["prior"])
    oracle = None
    if p["target"] is not None:
        target, _ = load_target(ws, p["target"], job.runtime)
        knowledge = defender_knowledge(ws, p["target"], job.runtime) if attack.knows_defense else None
        oracle = make_oracle(target, attack, data, knowledge)
    public = data.public
    if attack.needs_public_identities():
        if data.public_identities is None:
            raise DataError(
                f"attack {attack.name!r} trains on labelled public identities; dataset {data.name!r} has no public "
                "identity labels (give the attack a released network instead, see its params)"
            )
        public = ImageSet(public.images, data.public_identities)
    start = time.perf_counter()
    attack.train_prior(prior, public, oracle, ctx, p["prior"])
    _publish(ws, job, {"prior.pt": prior.state_dict()}, [], time.perf_counter() - start)


def run_invert(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """Run an attack against the deployed target; publish reconstructions and query counts."""
    p = job.payload
    attack: Attack = instantiate(ATTACKS, p["attack"])
    target, data = load_target(ws, p["target"], job.runtime)
    prior = load_priors(ws, attack, p["priors"], data)
    knowledge = defender_knowledge(ws, p["target"], job.runtime) if attack.knows_defense else None
    oracle = make_oracle(target, attack, data, knowledge)
    start = time.perf_counter()
    recon = attack.invert(prior, oracle, torch.tensor(p["classes"], dtype=torch.long), ctx)
    wall = time.perf_counter() - start
    recon.stats["target_queries"] = float(oracle.queries)
    # Non-finite reconstructions are counted once, where they are made; the metrics that cannot use them say why.
    recon.stats["nonfinite_reconstructions"] = float(nonfinite_count(recon.images))
    values = [Measurement(k, v, None, "count") for k, v in recon.stats.items()]
    values.append(Measurement("attack_time_s", wall, None, "seconds"))
    _publish(ws, job, {"reconstructions.pt": recon}, values, wall)


def run_measure(job: Job, ws: Workspace, ctx: RunContext) -> None:
    """Compute the job's metrics."""
    p = job.payload
    target, data = load_target(ws, p["target"], job.runtime)
    evaluator, evaluator_acc = load_evaluator(ws, p["evaluator"], job.runtime)
    recon = None
    if "invert" in p:
        recon = Reconstructions.from_state(ws.store.load_tensors("invert", p["invert"], "reconstructions.pt"))
    eval_data = ws.data(p["eval_data"], job.runtime)
    rendered = _evaluation_renders(ws, p["invert"], recon, eval_data, data, ctx) if recon is not None else None
    inputs = MeasureInputs(
        target=target,
        evaluator=evaluator,
        evaluator_accuracy=evaluator_acc,
        data=data,
        eval_data=eval_data,
        classes=torch.tensor(p.get("classes", []), dtype=torch.long),
        reconstructions=recon,
        device=ws.device,
        target_extras=ws.store.load_tensors("target", p["target"], "extras.pt"),
        evaluation_images=rendered,
        protocol=p.get("protocol", "standard"),
        pipeline=p.get("pipeline"),
    )
    start = time.perf_counter()
    values: list[Measurement] = []
    for spec in p["metrics"]:
        values += instantiate(METRICS, spec).compute(inputs, ctx)
    nonfinite = nonfinite_count(recon.images) if recon is not None else 0
    values = [explain_missing(v, nonfinite, len(recon.images) if recon is not None else 0) for v in values]
    _publish(ws, job, {}, values, time.perf_counter() - start)


def nonfinite_count(images: torch.Tensor) -> int:
    """How many images hold a NaN or infinite pixel."""
    return int((~torch.isfinite(images.flatten(1))).any(1).sum()) if images.numel() else 0


def explain_missing(value: Measurement, nonfinite: int, total: int) -> Measurement:
    """A measurement without a finite value, with `details.reason` saying why when the metric did not.

    `nonfinite` of the job's `total` reconstructions hold NaN or infinite pixels (counted once per job).
    """
    if (value.value is not None and math.isfinite(value.value)) or "reason" in value.details:
        return value
    reasons = []
    if nonfinite:
        reasons.append(f"{nonfinite} of {total} reconstructions non-finite")
    if value.details.get("official_value") == -1000:
        reasons.append("no successful reconstruction (the official code reports -1000)")
    elif value.details.get("n_fake") is not None and value.details["n_fake"] < 2:
        reasons.append(f"{value.details['n_fake']} successful reconstructions (at least 2 are needed)")
    reason = "; ".join(reasons) or "the metric gave no finite value"
    return replace(value, details={**value.details, "reason": reason})


def _evaluation_renders(
    ws: Workspace, invert_key: str, recon: Reconstructions, eval_data: DataBundle, data: DataBundle, ctx: RunContext
) -> torch.Tensor | None:
    """The attack's own renders at the evaluator's resolution (PPA), from its invert job's attack and priors."""
    payload = ws.store.read_json("invert", invert_key, "job.json")
    attack: Attack = instantiate(ATTACKS, payload["attack"])
    if type(attack).evaluation_images is Attack.evaluation_images:
        return None
    prior = load_priors(ws, attack, payload["priors"], data)
    return attack.evaluation_images(prior, recon, eval_data.image_size, ctx)


RUNNERS = {
    "evaluator": run_evaluator,
    "target": run_target,
    "prior": run_prior,
    "invert": run_invert,
    "measure": run_measure,
}


def run_job(job: Job, ws: Workspace) -> None:
    """Fix threads and determinism, seed, then run the job's stage.

    Global RNGs are seeded from the key so that layer initialisation is reproducible too; methods draw the rest from
    `RunContext.generator`.
    """
    ws.execution = apply_execution(job.runtime.get("execution", {}), ws.device)
    seed = job.payload.get("seed", derive_seed(job.key))
    seed_everything(seed)
    paths = job.runtime.get("files", {})
    planned = {paths[name]: ref["sha256"] for name, ref in job.payload.get("files", {}).items() if name in paths}
    with planned_files(planned):
        RUNNERS[job.stage](job, ws, RunContext(ws.device, seed, ws.reporter))
