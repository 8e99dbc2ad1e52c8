"""Every figure the README and docs/ show is spliced from results/ (`make readme`), and every
result says where it came from: a hand edit of a block, a block without a result, or a result
without its provenance fails here."""

import json
import re

import pytest

from tools import published as results
from tools.listings import differences

BLOCK = re.compile(r"<!-- ([\w-]+):start -->\n")


def blocks():
    """Every result's block (the listings made from registries are tools/listings.py's)."""
    return [
        (page, name)
        for page in results.pages()
        for name in BLOCK.findall(page.read_text())
        if not name.startswith("listing-")
    ]


@pytest.mark.parametrize("page,name", blocks(), ids=lambda x: getattr(x, "name", x))
def test_every_block_is_its_result_as_spliced(page, name):
    made = (results.RESULTS / name / "result.md").is_file()
    if not made and results.block(page.read_text(), name) == "":
        # A new result's empty block, in the commit that adds its generator (which then runs
        # on that commit): said, not hidden.
        entry = results.PUBLISHED.get(name)
        pytest.skip(f"results/{name} is not made yet: {entry.make if entry else '?'}")
    assert made, f"{page.name} has a {name} block but results/{name}/result.md does not exist"
    assert results.block(page.read_text(), name) == results.rendered(name, page).rstrip() + "\n", (
        f"the {name} block of {page.relative_to(results.REPO)} differs from results/{name}/: "
        "run `make readme` (edit results through the command that makes them, not by hand)"
    )


@pytest.mark.parametrize("name", results.names())
def test_every_result_has_its_provenance(name):
    _, prov = results.load(name)
    missing = [k for k in results.REQUIRED if k not in prov]
    assert not missing, f"results/{name}/provenance.json lacks {missing}"
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]), prov["commit"]
    assert prov["versions"].get("torch") and prov["hardware"], name
    json.loads((results.RESULTS / name / "result.json").read_text())
    assert name in results.PUBLISHED, (
        f"tools/published.py's PUBLISHED does not say how {name} is made"
    )


def makefile_targets() -> dict[str, str]:
    """Every target of the Makefile and its recipe."""
    targets, current = {}, None
    for line in (results.REPO / "Makefile").read_text().splitlines():
        if match := re.match(r"^([a-z][a-z0-9-]*):", line):
            current = match.group(1)
            targets[current] = ""
        elif line.startswith("\t") and current:
            targets[current] += line + "\n"
    return targets


def test_the_table_of_published_results_and_the_makefile_agree():
    """One table (tools/published.py) names every result and the target that makes it: each
    target exists, each target that publishes is in the table, and every result made is in it."""
    targets = makefile_targets()
    named = results.make_targets()
    assert set(named) <= set(targets), set(named) - set(targets)
    publishing = {
        t
        for t, recipe in targets.items()
        if "--readme" in recipe or "tools.published run" in recipe or "tools.demo" in recipe
    }
    publishing -= {"demo"}  # make demo prints its table and compares it; demo-readme publishes
    assert publishing <= set(named), (
        f"targets that publish but are not in PUBLISHED: {publishing - set(named)}"
    )
    assert set(results.names()) <= set(results.PUBLISHED)
    assert "results" in targets and "tools.published targets" in targets["results"]


def test_every_result_is_shown_somewhere():
    shown = {name for _, name in blocks()}
    assert set(results.names()) <= shown, set(results.names()) - shown


def test_resolutions_are_listed_in_ascending_order_with_full_last():
    from crossres_dist.eval.protocols.base import unique

    assert unique([8, 12, 24, 32, None, 16]) == [8, 12, 16, 24, 32, None]
    jpeg = {"jpeg_quality": 20.0}
    assert unique([None, jpeg, 16, 8, 16]) == [8, 16, jpeg, None]
    demo = (results.RESULTS / "demo" / "result.md").read_text()
    header = next(line for line in demo.splitlines() if line.startswith("| test split"))
    columns = [c.strip() for c in header.strip("|").split("|")][2:]
    sizes = [int(c.split()[0]) for c in columns[:-1]]
    assert sizes == sorted(sizes) and columns[-1] == "full", columns


def test_every_listing_is_its_registry_as_it_is_now():
    """The docs' tables of degradation steps, protocols and architectures are made from their
    registries (tools/listings.py): a registered component missing from the docs fails here."""
    assert differences() == [], "run make readme"
