"""The docs' listings of registered components, made from the registries: the degradation steps
(docs/recipe.md), the evaluation protocols (docs/benchmarks.md) and the architectures
(docs/layout.md). ``make readme`` splices each into its ``<!-- listing-NAME:start -->`` block;
tests/unit/test_readme.py fails when a block differs from what its registry makes now, so a
registered component cannot be missing from the docs.

    python -m tools.listings          # splice every listing
"""

from __future__ import annotations

from collections.abc import Callable

from crossres_dist.eval.protocols import protocols_table
from crossres_dist.models import architectures_table
from pipelines.degradations import steps_table
from tools.published import REPO, block, pages, replace_block

LISTINGS: dict[str, Callable[[], str]] = {
    "listing-degradations": steps_table,
    "listing-protocols": protocols_table,
    "listing-architectures": architectures_table,
}


def rendered(name: str) -> str:
    where = {
        "listing-degradations": "pipelines/degradations/registry.py",
        "listing-protocols": "crossres_dist/eval/protocols/__init__.py",
        "listing-architectures": "crossres_dist/models/registry.py",
    }[name]
    return (
        f"<!-- {name}: made from {where} by `make readme`; do not edit here -->\n"
        f"{LISTINGS[name]()}\n"
    )


def differences() -> list[str]:
    """Every listing with no block in the docs, or whose block differs from its registry."""
    out = []
    for name in LISTINGS:
        present = [(page, block(page.read_text(), name)) for page in pages()]
        present = [(page, content) for page, content in present if content is not None]
        if not present:
            out.append(f"{name}: no page of the docs has its block")
        out += [
            f"{page.relative_to(REPO)}: {name} differs from its registry (make readme)"
            for page, content in present
            if content != rendered(name)
        ]
    return out


def splice() -> list[str]:
    done = []
    for page in pages():
        text = original = page.read_text()
        for name in LISTINGS:
            if block(text, name) is not None:
                text = replace_block(text, name, rendered(name))
                done.append(name)
        if text != original:
            page.write_text(text)
    return done


if __name__ == "__main__":
    print(f"listings spliced into the docs: {', '.join(splice()) or 'nothing'}")
