"""Expand a suite into a DAG of content-addressed jobs.

Stages, in dependency order:

* `evaluator`: the evaluation model, once per (data, architecture, recipe); shared by every run.
* `target`: one per defense x seed.
* `prior`: an attack's learnt prior (GAN, ...). Shared by every target and seed when the attack's prior does not
  depend on the target (GMI's GAN: seeded from the suite's base seed), else one per target.
* `invert`: one per attack x target.
* `measure`: target-scope metrics once per target; attack-scope metrics once per inversion.

A job's key hashes its payload: everything that determines its output (method names, versions and validated
params, seeds, data definition, upstream keys, the cache version), and nothing that does not (labels, paths).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench import CACHE_VERSION
from mibench.checkpoints import file_sha256
from mibench.errors import DataError
from mibench.hashing import content_key, derive_seed
from mibench.registry import DEFENSES
from mibench.running.store import STAGE_FOLDERS
from mibench.suite import ResolvedDefense, ResolvedMethod, ResolvedSuite
from mibench.training.stack import trained_prefix

STAGES = STAGE_FOLDERS  # a stage's artifacts live in the cache folder of its name
# Relative cost of a typical job per stage, for ordering only (BENCHMARKS.md's table1 projection on one H100: a
# target about 0.26 h, a per-target prior 0.25-2 h, an inversion about 0.2 h, a measurement seconds).
STAGE_WEIGHTS = {"evaluator": 1.0, "target": 1.0, "prior": 4.0, "invert": 1.0, "measure": 0.1}


@dataclass(frozen=True)
class Job:
    """One unit of work.

    Attributes:
        stage: One of `STAGES`.
        key: Content hash of `payload`.
        payload: JSON-serialisable description of everything that determines the output.
        deps: Ids ("stage/key") of upstream jobs.
        label: Human-readable description.
        runtime: What the job needs but must not be keyed on (data folders, thread count).
    """

    stage: str
    key: str
    payload: dict[str, Any]
    deps: tuple[str, ...]
    label: str
    runtime: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """The id "stage/key", unique within a plan."""
        return f"{self.stage}/{self.key}"


@dataclass(frozen=True)
class RecordSource:
    """Which job's values become records under which labels."""

    job_id: str
    seed: int | None
    defense: str | None
    attack: str | None


@dataclass
class Plan:
    """Jobs in a valid execution order, and where records come from."""

    suite: ResolvedSuite
    jobs: dict[str, Job] = field(default_factory=dict)
    sources: list[RecordSource] = field(default_factory=list)

    def add(self, job: Job) -> Job:
        """Add a job unless an identical one is planned already; returns the planned one."""
        self.jobs.setdefault(job.id, job)
        return self.jobs[job.id]

    def descendants(self, roots: set[str]) -> set[str]:
        """`roots` and every job that depends on them, transitively."""
        out = set(roots)
        for job in self.jobs.values():  # insertion order is topological
            if any(d in out for d in job.deps):
                out.add(job.id)
        return out

    def critical_paths(self) -> dict[str, float]:
        """Per job, the scheduling weight of the heaviest chain it starts: its own plus that of its heaviest dependant.

        The runner starts ready jobs in decreasing order of this, so that long chains (a target, its per-target
        priors, their inversions) begin first and short leaves fill the remaining slots. Weights are rough relative
        costs per stage (`STAGE_WEIGHTS`); they decide the order only, never what a job computes.
        """
        dependants: dict[str, list[str]] = {job_id: [] for job_id in self.jobs}
        for job in self.jobs.values():
            for dep in job.deps:
                dependants[dep].append(job.id)
        paths: dict[str, float] = {}
        for job in reversed(list(self.jobs.values())):  # insertion order is topological: dependants come first here
            paths[job.id] = STAGE_WEIGHTS[job.stage] + max((paths[d] for d in dependants[job.id]), default=0.0)
        return paths

    def by_stage(self) -> dict[str, list[Job]]:
        """Jobs grouped by stage."""
        groups: dict[str, list[Job]] = {s: [] for s in STAGES}
        for job in self.jobs.values():
            groups[job.stage].append(job)
        return groups


def _method(m: ResolvedMethod) -> dict[str, Any]:
    return {"name": m.name, "version": m.cls.version, "params": m.params_json()}


def _job(stage: str, payload: dict[str, Any], deps: tuple[str, ...], label: str, runtime: dict | None = None) -> Job:
    payload = {"stage": stage, "cache_version": CACHE_VERSION, **payload}
    return Job(stage, content_key(payload), payload, deps, label, runtime or {})


def data_payload(rs: ResolvedSuite, image_size: int, dataset: ResolvedMethod | None = None) -> dict[str, Any]:
    """What determines the data bundle (not where its files are); `dataset` replaces the suite's (the evaluator's)."""
    public = None
    if rs.public_dataset is not None:
        public = _method(rs.public_dataset)
    return {"dataset": _method(dataset or rs.dataset), "image_size": image_size, "public": public}


def data_runtime(rs: ResolvedSuite) -> dict[str, Any]:
    """Data folders, passed to jobs outside the key."""
    public = rs.suite.data.public
    return {
        "root": rs.suite.data.root,
        "public_root": public.root if public else None,
        "execution": rs.suite.execution.model_dump(mode="json"),
    }


def checkpoint_ref(path: str | None, where: str) -> dict[str, str] | None:
    """A checkpoint enters keys by content (SHA-256), never by path; a missing file is an error naming the key."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{where}: checkpoint file not found: {p}")
    return {"sha256": file_sha256(p)}


def build_plan(rs: ResolvedSuite) -> Plan:
    """Expand the suite (see module docstring)."""
    suite = rs.suite
    plan = Plan(rs)
    size = suite.data.image_size
    eval_size = suite.evaluator.input_size or size
    data, eval_data, runtime = data_payload(rs, size), data_payload(rs, eval_size), data_runtime(rs)
    classes = suite.classes()

    evaluator_files = keyed_files(weight_files(_method(rs.evaluator_arch)["params"]), "evaluator.params.")
    evaluator = plan.add(
        _job(
            "evaluator",
            {
                "architecture": _method(rs.evaluator_arch),
                "train": None if suite.evaluator.checkpoint else suite.evaluator.train.model_dump(mode="json"),
                # its own data when the suite gives the evaluator other classes (else the measure jobs' eval data)
                "data": data_payload(rs, eval_size, rs.evaluator_dataset) if rs.evaluator_dataset else eval_data,
                "seed": derive_seed(suite.seed, "evaluator"),
                "checkpoint": checkpoint_ref(suite.evaluator.checkpoint, "evaluator.checkpoint"),
                **evaluator_files[0],
            },
            (),
            f"evaluator {rs.evaluator_arch.name}",
            {**runtime, "checkpoint_path": suite.evaluator.checkpoint, **evaluator_files[1]},
        )
    )
    plan.sources.append(RecordSource(evaluator.id, None, None, None))
    target_metrics = [_method(m) for m in rs.metrics if m.cls.scope == "target"]
    attack_metrics = [_method(m) for m in rs.metrics if m.cls.scope == "attack"]
    target_files = metric_files([m for m in rs.metrics if m.cls.scope == "target"])
    attack_files = metric_files([m for m in rs.metrics if m.cls.scope == "attack"])

    for seed in suite.seeds:
        for defense in rs.defenses:
            target = _plan_target(plan, rs, defense, seed, data, runtime)
            plan.sources.append(RecordSource(target.id, seed, defense.label, None))
            common = {"target": target.key, "evaluator": evaluator.key, "data": data, "eval_data": eval_data}
            if target_metrics:
                m = plan.add(
                    _job(
                        "measure",
                        {"metrics": target_metrics, **common, **target_files[0]},
                        (target.id, evaluator.id),
                        f"measure {defense.label} seed={seed}",
                        {**runtime, **target_files[1]},
                    )
                )
                plan.sources.append(RecordSource(m.id, seed, defense.label, None))
            for attack in rs.attacks:
                if attack.defenses is not None and defense.label not in attack.defenses:
                    continue
                _plan_attack(plan, rs, attack, target, seed, data, runtime, classes, attack_metrics, common, defense,
                             attack_files)  # fmt: skip
    return plan


def weight_files(params: Any, prefix: str = "") -> dict[str, str]:
    """Architecture initialisation files in a params mapping: every `pretrained` path that exists, by its key path.

    Every architecture names its initialisation file `pretrained` (the README's weights table), also when it is nested
    in a method's params (LOMMA's students, LOKT's surrogates).
    """
    found: dict[str, str] = {}
    if isinstance(params, dict):
        for key, value in params.items():
            # a file absent at planning stays out of the key: its job fails naming it when it is read (as the
            # weights metrics read do), and `mibench validate` works on a machine without the weights
            if key == "pretrained" and isinstance(value, str) and value and Path(value).is_file():
                found[f"{prefix}{key}"] = value
            else:
                found.update(weight_files(value, f"{prefix}{key}."))
    elif isinstance(params, list):
        for i, value in enumerate(params):
            found.update(weight_files(value, f"{prefix.removesuffix('.')}[{i}]."))
    return found


def keyed_files(files: dict[str, str], where: str | Callable[[str], str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload part, runtime part) naming `files` ({name: path}) by content; both empty (keys unchanged) for none.

    `where` names the suite key of a file in errors: a prefix of its name, or a function of it.

    The payload holds each file's SHA-256, so a new file is a new job; the runtime holds where it is, and the job
    checks what it reads against the hash (`checkpoints.planned_files`).
    """
    if not files:
        return {}, {}
    locate = where if callable(where) else lambda name: f"{where}{name}"
    refs = {name: checkpoint_ref(path, locate(name)) for name, path in files.items()}
    return {"files": refs}, {"files": dict(files)}


def metric_files(metrics: list[ResolvedMethod]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload part, runtime part) for the weights files metrics read (`Metric.external_files`).

    The payload names each file by content ({"files": {"facenet-distance.weights": {"sha256": ...}}}), so a new file
    is a new job; the runtime carries where it is. Both are empty, and keys unchanged, when no metric reads a file.
    """
    files = {f"{m.name}.{key}": str(path) for m in metrics for key, path in m.cls(m.params).external_files().items()}
    return keyed_files(files, lambda name: "metrics[{}].params.{}".format(*name.split(".", 1)))


def _plan_target(plan: Plan, rs: ResolvedSuite, defense: ResolvedDefense, seed: int, data: dict, runtime: dict) -> Job:
    """The target job of a defense and seed.

    A stack whose last members are deploy-only (MIDAS, output purifiers) does not train its weights again: its job
    depends on the target of its training members (the undefended target when there are none), the very job a suite
    row of those members plans, and only runs the deploy-only members' `finish` on those weights.
    """
    suite = rs.suite
    common = {"architecture": _method(rs.target_arch), "data": data, "seed": derive_seed(seed, "target")}
    trained = trained_prefix([m.cls for m in defense.members])
    if trained is None:
        members = [_method(m) for m in defense.members]
        payload = {
            "defense": members,
            "train": None if suite.target.checkpoint else suite.target.train.model_dump(mode="json"),
            **common,
            "checkpoint": checkpoint_ref(suite.target.checkpoint, "target.checkpoint"),
        }
        files = keyed_files(weight_files(common["architecture"]["params"]), "target.params.")
        payload.update(files[0])
        label = f"target {defense.label} seed={seed}"
        job_runtime = {**runtime, "checkpoint_path": suite.target.checkpoint, **files[1]}
        return plan.add(_job("target", payload, (), label, job_runtime))
    if trained:
        base_members = defense.members[:trained]
    else:
        none = DEFENSES.get("none")
        base_members = [ResolvedMethod("none", "-", none, none.Params())]
    base_label = "+".join(m.name for m in base_members)
    base = _plan_target(plan, rs, ResolvedDefense(base_label, base_members), seed, data, runtime)
    payload = {"defense": [_method(m) for m in defense.members], "base": base.key, **common}
    return plan.add(_job("target", payload, (base.id,), f"target {defense.label} seed={seed}", runtime))


def _training_target(plan: Plan, target: Job, defense: ResolvedDefense) -> Job:
    """The target job whose model attacks train their target-dependent priors on (see `_plan_attack`)."""
    trained = trained_prefix([m.cls for m in defense.members])
    if "base" not in target.payload or trained is None:
        return target
    deployed = [m.cls(m.params) for m in defense.members[trained:]]
    if not all(d.attackers_train_before_deployment() for d in deployed):
        return target
    return plan.jobs[f"target/{target.payload['base']}"]


def _plan_attack(
    plan: Plan,
    rs: ResolvedSuite,
    attack: ResolvedMethod,
    target: Job,
    seed: int,
    data: dict,
    runtime: dict,
    classes: list[int],
    attack_metrics: list[dict],
    common: dict,
    defense: ResolvedDefense,
    metric_files: tuple[dict, dict] = ({}, {}),
) -> None:
    instance = attack.cls(attack.params)
    prior_keys: dict[str, str] = {}
    deps = [target.id]
    # The model target-dependent priors learn from: the target before its deploy-only defenses when they all say
    # attackers train before deployment (MIDAS's deep notebook), else the deployed target.
    trained_on = _training_target(plan, target, defense)
    for spec in instance.priors():
        prior_params = spec.params.model_dump(mode="json") if spec.params is not None else {}
        prior_files = keyed_files(weight_files(prior_params), f"attacks[{attack.label}].params.")
        prior = plan.add(
            _job(
                "prior",
                {
                    "prior": spec.name,
                    "version": spec.version,
                    "params": prior_params,
                    "data": data,
                    "target": trained_on.key if spec.uses_target else None,
                    "seed": derive_seed(seed if spec.uses_target else rs.suite.seed, "prior", spec.name),
                    **prior_files[0],
                },
                (trained_on.id,) if spec.uses_target else (),
                f"prior {spec.name}" + (f" for {trained_on.label}" if spec.uses_target else ""),
                # Any attack naming this prior builds the same module, so which one builds it is not part of the key.
                {**runtime, "builder": _method(attack), **prior_files[1]},
            )
        )
        prior_keys[spec.name] = prior.key
        deps.append(prior.id)
    payload = {
        "attack": _method(attack),
        "priors": prior_keys,
        "target": target.key,
        "classes": classes,
        "data": data,
        "seed": derive_seed(seed, "invert", attack.name),
    }
    files = {k: str(v) for k, v in instance.external_files().items()}
    files.update(weight_files(payload["attack"]["params"]))
    invert_files = keyed_files(files, f"attacks[{attack.label}].params.")
    payload.update(invert_files[0])  # only when present: the keys of attacks without files stay as they were
    invert = plan.add(
        _job(
            "invert",
            payload,
            tuple(deps),
            f"invert {attack.label} on {defense.label} seed={seed}",
            {**runtime, **invert_files[1]},
        )
    )
    plan.sources.append(RecordSource(invert.id, seed, defense.label, attack.label))
    if attack_metrics:
        m = plan.add(
            _job(
                "measure",
                {
                    "metrics": attack_metrics,
                    "invert": invert.key,
                    "classes": classes,
                    "protocol": rs.suite.protocol,
                    "pipeline": attack.cls.published_pipeline,
                    **common,
                    **metric_files[0],
                },
                (invert.id, target.id, f"evaluator/{common['evaluator']}"),
                f"measure {attack.label} on {defense.label} seed={seed}",
                {**runtime, **metric_files[1]},
            )
        )
        plan.sources.append(RecordSource(m.id, seed, defense.label, attack.label))
