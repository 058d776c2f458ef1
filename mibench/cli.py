"""The `mibench` command: run, report, list, validate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mibench.errors import MibenchError
from mibench.reporting.command import cmd_report, write_run_page

FORMATS = ("markdown", "latex", "csv", "html")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--budget takes a fraction in (0, 1], got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mibench", description="Benchmark defenses against model-inversion attacks.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (resumes; finished artifacts are reused)")
    run.add_argument("suite", type=Path, help="suite YAML file")
    run.add_argument("--out", type=Path, help="run folder for records and tables (default: the suite's output.dir)")
    run.add_argument("--cache", type=Path, help="artifact cache (default: the suite's output.cache)")
    run.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    run.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rebuild a stage and everything downstream: all, evaluator, target, prior, invert, measure",
    )
    run.add_argument(
        "--budget",
        type=_fraction,
        metavar="F",
        help="scale every attack's iteration counts by F in (0, 1] (quick runs; overrides the suite's attack_budget)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        default="local",
        help="where jobs run: local (this machine), slurm (submitit job arrays), ray (tasks on a Ray cluster); "
        "cluster resources come from the suite's `cluster:` section and the flags below",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="parallel worker processes on a CPU machine (default 1: in this process); on GPUs one per GPU",
    )
    run.add_argument("--jobs-per-gpu", type=int, default=1, metavar="K", help="workers per visible GPU (default 1)")
    run.add_argument(
        "--packing",
        type=Path,
        metavar="PROFILE",
        help="local executor: run jobs side by side on each GPU (on a CPU machine, on the machine) as far as the "
        "memory and utilisation measured in PROFILE allow (benchmarks/stages.py --packing-out); replaces "
        "--jobs-per-gpu",
    )
    cluster = run.add_argument_group("cluster executors (override the suite's cluster: section)")
    cluster.add_argument("--slurm-partition")
    cluster.add_argument("--slurm-account")
    cluster.add_argument("--slurm-time", type=int, metavar="MIN", help="wall-time limit of a job in minutes")
    cluster.add_argument("--gpus-per-job", type=float, metavar="G", help="GPUs reserved per job (slurm, ray)")
    cluster.add_argument("--cpus-per-job", type=float, metavar="C", help="CPUs reserved per job (slurm, ray)")
    cluster.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default="slurm",
        help="submitit backend: slurm, or local/debug to try the path without SLURM",
    )
    cluster.add_argument("--ray-address", help="an existing Ray cluster ('auto', 'ray://host:port'); none: local")
    run.add_argument("--retry-failed", action="store_true", help="run again the jobs that failed in earlier runs")
    run.add_argument(
        "--no-rebuild",
        action="store_true",
        help="stop, naming them, when cached artifacts fail verification (default: set them aside and rebuild them)",
    )
    run.add_argument(
        "--lock-timeout",
        type=float,
        metavar="S",
        help="give up on an artifact another process has been building for S seconds (default: wait, saying who)",
    )
    run.add_argument("--dry-run", action="store_true", help="list the jobs and what is cached; run nothing")
    run.add_argument("--quiet", action="store_true", help="no progress output")

    report = sub.add_parser("report", help="tables from a run folder's records")
    report.add_argument(
        "run_dir", type=Path, nargs="*", help="a run folder (default: the newest under --root); several with --html"
    )
    report.add_argument("--root", type=Path, default=Path("results"), help="where runs are looked for (results/)")
    report.add_argument("--list", action="store_true", help="list the runs under --root and stop")
    report.add_argument(
        "--stats", action="store_true", help="mark significant differences (Welch, Holm) and list every comparison"
    )
    report.add_argument("--strict", action="store_true", help="fail when a cell covers fewer seeds than planned")
    report.add_argument(
        "--verify",
        action="store_true",
        help="check every record against the cached artifact it came from (value, integrity); name what none backs",
    )
    report.add_argument("--cache", type=Path, help="with --verify: the cache (default: the one the run used)")
    fmt = report.add_mutually_exclusive_group()
    for name in FORMATS:
        fmt.add_argument(f"--{name}", dest="format", action="store_const", const=name)
    report.add_argument(
        "--layout",
        default=None,
        help="table layout (default: the suite's report.layout); frontier: attack accuracy at matched accuracy",
    )
    report.add_argument(
        "--accuracy-drops",
        default=None,
        metavar="P,Q,...",
        help="with --layout frontier: accuracy drops from the undefended target, in points (default: 1,2,5)",
    )
    report.add_argument("--out", type=Path, help="write to a file instead of stdout")
    report.add_argument(
        "--compare-paper",
        nargs="?",
        type=int,
        const=0,
        metavar="TABLE",
        help="put the Trap-MID paper's published values beside ours (table number; default: the layout's); refused "
        "when the run's setting differs from the table's",
    )
    report.add_argument(
        "--compare-anyway",
        action="store_true",
        help="with --compare-paper: compare although the setting differs (the caption names the differences)",
    )

    figures = sub.add_parser("figures", help="trade-off plot (PNG, PDF) and reconstruction grids of a run")
    figures.add_argument("run_dir", type=Path)
    figures.add_argument("--attack", action="append", help="grid of this attack label (repeatable; default: all)")
    figures.add_argument("--classes", type=int, default=8, help="rows of each grid (default 8)")
    figures.add_argument("--seed", type=int, help="the run whose reconstructions a grid shows (default: the first)")
    figures.add_argument("--out", type=Path, help="folder for the figures (default: RUN_DIR/figures)")

    lst = sub.add_parser("list", help="registered defenses, attacks, metrics, datasets and architectures")
    lst.add_argument("kind", nargs="?", choices=("defenses", "attacks", "metrics", "datasets", "architectures"))

    validate = sub.add_parser("validate", help="check a suite file without running it")
    validate.add_argument("suite", type=Path)

    cache = sub.add_parser("cache", help="check the artifact cache")
    cache.add_argument("action", choices=("verify",), help="verify: check every artifact's files against its marker")
    cache.add_argument("--cache", type=Path, default=Path("results/cache"), help="the cache (default results/cache)")
    cache.add_argument(
        "--repair", action="store_true", help="set invalid artifacts aside (the next run rebuilds them), clean litter"
    )
    cache.add_argument(
        "--adopt-legacy",
        action="store_true",
        help="record the files of artifacts finished before integrity records, instead of rebuilding them",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    for command in sub.choices.values():  # also accepted after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def make_executor(args: argparse.Namespace, cluster, store, device):
    """The executor the flags ask for (None: the runner's in-process default)."""
    import torch

    from mibench.running import executors

    if args.packing is not None and args.executor != "local":
        raise MibenchError(f"--packing applies to the local executor, not --executor {args.executor}")
    if args.executor == "slurm":
        spec = cluster.slurm.model_copy(
            update={
                k: v
                for k, v in {
                    "partition": args.slurm_partition,
                    "account": args.slurm_account,
                    "time_min": args.slurm_time,
                    "gpus_per_job": None if args.gpus_per_job is None else int(args.gpus_per_job),
                    "cpus_per_job": None if args.cpus_per_job is None else int(args.cpus_per_job),
                }.items()
                if v is not None
            }
        )
        return executors.SubmititExecutor(store, spec, cluster=args.slurm_cluster, device=args.device)
    if args.executor == "ray":
        overrides = {"address": args.ray_address, "gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job}
        spec = cluster.ray.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        return executors.RayExecutor(store, spec, device=args.device)
    if args.packing is not None:
        from mibench.running.packing import read_budget

        budget = read_budget(args.packing)
        return executors.LocalPoolExecutor(store, device, budget=budget, lock_timeout=args.lock_timeout)
    if (args.jobs or 1) > 1 or (device.type == "cuda" and torch.cuda.device_count() * args.jobs_per_gpu > 1):
        return executors.LocalPoolExecutor(
            store, device, jobs=args.jobs, jobs_per_gpu=args.jobs_per_gpu, lock_timeout=args.lock_timeout
        )
    return None


def require_writable_folder(path: Path, what: str) -> None:
    """Before any job runs: `path` is (or can be made) a writable folder, not a file."""
    import os

    if path.exists() and not path.is_dir():
        raise MibenchError(f"the {what} {path} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        raise MibenchError(f"the {what} {path} cannot be written ({existing} is not writable)")


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite, then write and print its table."""
    import torch

    from mibench.api.progress import Reporter
    from mibench.fileio import write_atomic
    from mibench.reporting.frontier import table_for_layout
    from mibench.reporting.headline import headline
    from mibench.reporting.render import render_latex, render_markdown
    from mibench.running.execution import default_device
    from mibench.running.executors import SequentialExecutor
    from mibench.running.plan import build_plan
    from mibench.running.runner import describe_plan, run_plan
    from mibench.running.store import ArtifactStore
    from mibench.suite import load_suite

    rs = load_suite(args.suite, budget=args.budget)
    plan = build_plan(rs)
    store = ArtifactStore(args.cache or Path(rs.suite.output.cache))
    if args.dry_run:
        print(describe_plan(plan, store))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MibenchError("--device cuda was asked for, but torch sees no CUDA device")
    device = torch.device(args.device) if args.device else default_device()
    run_dir = args.out or rs.suite.output_dir
    require_writable_folder(run_dir, "run folder (output.dir / --out)")
    require_writable_folder(store.root, "cache (output.cache / --cache)")
    store.claim()  # a folder that is not a mibench cache is refused before any work
    reporter = Reporter(quiet=args.quiet)
    reporter.log(f"suite {rs.suite.name}: {len(plan.jobs)} jobs on {device}; cache {store.root}; run folder {run_dir}")
    executor = make_executor(args, rs.suite.cluster, store, device)
    if executor is not None:
        packed = f", packed by {args.packing}" if args.packing is not None else ""
        reporter.log(f"{args.executor} executor: {executor.slots} jobs at a time{packed}")
    else:
        executor = SequentialExecutor(store, device, reporter, lock_timeout=args.lock_timeout)
    summary = run_plan(
        plan,
        store=store,
        run_dir=run_dir,
        device=device,
        reporter=reporter,
        force=args.force,
        executor=executor,
        retry_failed=args.retry_failed,
        rebuild=not args.no_rebuild,
    )
    table = table_for_layout(
        summary.records, rs.suite.model_dump(mode="json"), rs.suite.report.layout, rs.suite.report.caption
    )
    write_atomic(run_dir / "table.md", render_markdown(table))
    write_atomic(run_dir / "table.tex", render_latex(table))
    reporter.log(
        f"ran {len(summary.ran)} jobs, reused {len(summary.cached)} cached, in {summary.wall_time_s:.1f}s; "
        f"{len(summary.records)} records in {run_dir / 'records.jsonl'}"
    )
    print(render_markdown(table))
    shows = headline(summary.records, next((d.label for d in rs.defenses if d.name == "none"), None))
    if shows:
        print(f"What it shows: {shows}\n")
    if summary.records:
        print(f"HTML report: {write_run_page(run_dir, summary.records)}")
    if summary.failed:
        lines = [f"  {job}: {error}" for job, error in summary.failed.items()]
        print(
            f"{len(summary.failed)} job(s) failed, {len(summary.skipped)} skipped downstream of them; errors and "
            f"tracebacks under {store.root / 'failed'}; rerun with --retry-failed:\n" + "\n".join(lines),
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Write the trade-off plot and one reconstruction grid per attack."""
    from mibench.reporting.figures import frontier_figure, reconstruction_grid, save_figure, slug, tradeoff_plot
    from mibench.reporting.tables import load_run_records
    from mibench.running.runner import load_plan_info
    from mibench.running.store import ArtifactStore
    from mibench.suite.sweeps import sweep_rows

    if not (args.run_dir / "plan.json").is_file():
        raise MibenchError(f"{args.run_dir}: not a run folder (no plan.json); figures need a run made by mibench run")
    out = args.out or args.run_dir / "figures"
    records = load_run_records(args.run_dir)
    written = tradeoff_plot(records, out / "tradeoff")
    info = load_plan_info(args.run_dir)
    if sweep_rows(info["suite"]):  # defenses swept over their strength: their frontiers too
        fig = frontier_figure(records, info["suite"])
        for suffix in (".png", ".pdf"):
            save_figure(fig, out / f"frontier{suffix}")
            written.append(out / f"frontier{suffix}")
    store = ArtifactStore(Path(info["cache"]))
    attacks = args.attack or list(dict.fromkeys(a["label"] for a in info["suite"]["attacks"]))
    for attack in attacks:
        written.append(
            reconstruction_grid(info, store, attack, out / f"grid-{slug(attack)}.png", args.classes, args.seed)
        )
    print("\n".join(str(p) for p in written))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the registries."""
    from rich.console import Console
    from rich.table import Table

    from mibench.registry import REGISTRIES

    console = Console()
    for kind, registry in REGISTRIES.items():
        if args.kind and kind != args.kind:
            continue
        table = Table(title=kind, title_justify="left")
        table.add_column("name")
        table.add_column("paper")
        methods = kind in ("defenses", "attacks")
        if methods:
            table.add_column("official code (FIDELITY.md)")
            table.add_column("version")
        extra = {"attacks": "access", "metrics": "scope", "defenses": "strength (sweep: default)"}.get(kind)
        if extra:
            table.add_column(extra)
        for name, cls in registry:
            row = [name, cls.paper]
            if methods:
                row += [cls.official or "none released", str(cls.version)]
            if kind == "attacks":
                row.append(str(cls.access.value))
            elif kind == "metrics":
                row.append(str(cls.scope))
            elif kind == "defenses":
                defaults = cls.Params()
                row.append(", ".join(f"{k}: {getattr(defaults, k)}" for k in cls.strength) or "-")
            table.add_row(*row)
        console.print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a suite and summarise its plan."""
    from mibench.running.plan import build_plan
    from mibench.suite import load_suite

    rs = load_suite(args.suite)
    plan = build_plan(rs)
    counts = {stage: len(jobs) for stage, jobs in plan.by_stage().items()}
    s = rs.suite
    print(
        f"{args.suite}: valid. {len(rs.defenses)} defenses x {len(rs.attacks)} attacks x {len(s.seeds)} seeds, "
        f"{len(s.classes())} attacked classes; jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`mibench cache verify [--repair]`: every artifact against its marker; exit 1 when any is invalid unrepaired."""
    from mibench.running.store import ArtifactStore

    store = ArtifactStore(args.cache)
    if not store.root.is_dir():
        raise MibenchError(f"{store.root}: no cache folder there (give --cache)")
    store.claim()  # refuses a folder that is not a mibench cache: --repair deletes only what mibench wrote
    report = store.audit(repair=args.repair, adopt_legacy=args.adopt_legacy)
    for line in report.lines():
        print(line)
    return 1 if report.invalid and not args.repair else 0


COMMANDS = {
    "run": cmd_run,
    "report": cmd_report,
    "figures": cmd_figures,
    "list": cmd_list,
    "validate": cmd_validate,
    "cache": cmd_cache,
}


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for errors in the user's input, 130 when interrupted).

    Every error is one line (its message) unless `--debug` asks for the traceback.
    """
    import signal

    from mibench.errors import RunInterrupted

    args = _parser().parse_args(argv)
    # SIGTERM (a cluster's or a terminal's stop) ends a run as Ctrl-C does: one line, nothing finished lost.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt) if threading_main() else None
    try:
        return COMMANDS[args.command](args)
    except RunInterrupted as exc:
        if args.debug:
            raise
        print(f"mibench: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"mibench: interrupted ({args.command}); nothing finished was lost", file=sys.stderr)
        return 130
    except (MibenchError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        print(f"mibench: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an environment failure: one line, the traceback on request
        if args.debug:
            raise
        print(f"mibench: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_main() -> bool:
    """Whether this is the main thread (signal handlers can only be set there; tests call `main` from others)."""
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
