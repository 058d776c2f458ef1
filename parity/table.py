"""FIDELITY.md's parity table from tests/goldens/manifest.json and the registry: `python -m parity.table`."""

from __future__ import annotations

import json

from parity._harness import MANIFEST

BEGIN, END = "<!-- parity table: python -m parity.table -->", "<!-- end of parity table -->"


def method_class(name: str) -> type:
    """The registered defense, attack, metric or architecture called `name`."""
    from mibench.registry import ARCHITECTURES, ATTACKS, DEFENSES, METRICS

    for registry in (DEFENSES, ATTACKS, METRICS, ARCHITECTURES):
        if name in registry:
            return registry.get(name)
    raise KeyError(name)


def render(manifest: dict | None = None) -> str:
    """The Markdown table, one row per golden, between its markers."""
    manifest = manifest if manifest is not None else json.loads(MANIFEST.read_text())
    rows = [
        "| golden | method (version) | official code | units checked | largest difference | not covered |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in sorted(manifest.items()):
        methods = ", ".join(f"`{m}` (v{method_class(m).version})" for m in entry["method"].split(","))
        if "component" in entry:
            methods += f": {entry['component']}"
        cells = [
            f"`{name}`",
            methods,
            f"{entry['repository']} @ {entry['commit']}",
            entry["units"],
            f"{entry['largest_relative_difference']:.2g}",
            entry["not_covered"],
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join([BEGIN, *rows, END])


if __name__ == "__main__":
    print(render())
