"""Suite settings that never enter a cache key: where outputs go, how jobs execute, how reports look, clusters.

Changing any of them never changes what an artifact holds (a job's output depends only on its key).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from mibench.params import Params


class OutputSpec(Params):
    """Where the run's records and tables go, and the artifact cache (shared between suites).

    Relative paths stay inside the folder mibench runs in; writing elsewhere takes an absolute path (or `--out`,
    `--cache`), so a suite file from someone else cannot point a run at `../../..`.
    """

    dir: str | None = Field(None, description="default: results/<suite name>")
    cache: str = "results/cache"

    @field_validator("dir", "cache")
    @classmethod
    def _stays_inside(cls, v: str | None) -> str | None:
        if v is not None and not os.path.isabs(v) and os.path.normpath(v).split(os.sep)[0] == "..":
            raise ValueError(
                "a relative path must stay inside the folder mibench runs in; give an absolute path "
                "(or --out / --cache) to write outside it"
            )
        return v


class ExecutionSpec(Params):
    """How each job runs on its machine. Not part of any cache key; recorded with every artifact.

    Jobs set these at their start, so one key gives the same bytes on every executor of one machine (sequential,
    `--jobs N`, SLURM, Ray): CPU reductions split their work by thread, so the thread count shapes the result.
    """

    threads: int | None = Field(None, ge=1, description="CPU threads per job; default: the cores the process may use")
    deterministic: bool = Field(
        True,
        description="torch's deterministic algorithms and no cuDNN autotuning; false trades bitwise repeatability "
        "on GPUs for speed (GPU kernels are not bitwise reproducible either way; records say so)",
    )


class ReportSpec(Params):
    """Which table layout `mibench report` renders by default, and an optional caption prefix."""

    layout: str = "table1"
    caption: str | None = None
    paper_architecture: str | None = Field(
        None, description="--compare-paper: the paper's rows of this target (ResNet-152, ...) in multi-model tables"
    )


class SlurmSpec(Params):
    """Resources of each SLURM job (`mibench run --executor slurm`); CLI flags override them.

    Jobs that become ready together are submitted as one job array per stage; `stage_time_min` gives a stage a longer
    limit (a PLG-MI cGAN takes hours, a measurement seconds).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = Field(240, ge=1, description="wall-time limit of a job, minutes")
    stage_time_min: dict[Literal["evaluator", "target", "prior", "invert", "measure"], int] = Field(
        default_factory=dict
    )
    gpus_per_job: int = Field(1, ge=0)
    cpus_per_job: int = Field(8, ge=1)
    mem_gb: int = Field(32, ge=1)
    array_parallelism: int = Field(64, ge=1, description="jobs of one array running at once")
    max_jobs: int = Field(256, ge=1, description="jobs queued or running at once")
    logs: str = Field("slurm-logs", description="submitit's folder (relative paths: inside the cache)")


class RaySpec(Params):
    """Resources of each Ray task (`mibench run --executor ray`); CLI flags override them."""

    address: str | None = Field(None, description="an existing cluster ('auto', 'ray://host:port'); none: local")
    gpus_per_job: float = Field(1.0, ge=0)
    cpus_per_job: float = Field(4.0, gt=0)
    max_jobs: int | None = Field(None, ge=1, description="default: what the cluster's GPUs (or CPUs) can hold")


class ClusterSpec(Params):
    """How jobs map onto a cluster. Not part of any cache key: where a job runs never changes what it builds."""

    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    ray: RaySpec = Field(default_factory=RaySpec)
