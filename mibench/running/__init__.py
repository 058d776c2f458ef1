"""Running a suite: the plan of cached jobs, the runner, the stages a job runs, executors, packing and the store.

`plan` expands a resolved suite into jobs keyed by everything they read; `runner` runs the jobs not yet cached, in
dependency order, through an executor (`executors`: in-process, a worker pool, SLURM, Ray) and records what each
measured; `stages` holds what a job of each stage does; `packing` shares a device between jobs by their measured
footprints; `store` is the integrity-checked artifact cache and `locks` its per-job locks; `execution` and
`hostmem` set up a job's process. This is the only package that knows caching, seeds, devices and executors. It
may import the suite, the methods and everything below them, never `reporting` or the command line.
"""
