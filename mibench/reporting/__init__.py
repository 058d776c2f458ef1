"""Reports from records: tables, renderings, statistics, the paper comparison, figures, HTML, `mibench report`.

`tables` builds a `Table` from `records.jsonl` in a `layouts` layout; `render` writes it as text, escaping every
label (suite labels are data); `stats` adds intervals and significance; `compare` sets the paper's published values
beside ours with the settings that differ; `figures`, `html` and `headline` make the figures, the page and the
one-sentence summary; `command` is `mibench report`. Reports never recompute a number. This package may import
`running` (to read a run's plan) and everything below it, never the command line.
"""
