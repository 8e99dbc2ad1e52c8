"""Published figures and where they came from.

Every table or figure the README shows lives in ``results/<name>/``:

- ``result.md``: the block as the README shows it;
- ``result.json``: the numbers behind it;
- ``provenance.json``: the commit (and whether the tree was clean), the date, the exact command,
  the versions of Python, torch, DALI and NumPy, the CPU or GPU, a digest of the data's
  contents, the wall time, and the digest of the behaviour gate's golden files
  (``tests/assets/golden/``) at the time.

``make readme`` splices every result into its ``<!-- NAME:start -->`` block of README.md, under
one line that says where it came from; tests/unit/test_readme.py checks that every block is exactly
that. A change that moves a golden file makes every result recorded with the old golden digest
stale: ``python -m tools.published stale`` (and the end of every ``make test``) lists them
with the command that regenerates each. A change that moves no golden file (a comment, a rename, a
module split) leaves every result current: no study is rerun for a refactor.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from crossres_dist.errors import CrossresError

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
GOLDEN = REPO / "tests" / "assets" / "golden"
README = REPO / "README.md"
REQUIRED = ("commit", "date", "command", "versions", "hardware", "data", "golden", "wall_s")


class DirtyTree(CrossresError, RuntimeError):
    pass


class CommandFailed(CrossresError, RuntimeError):
    pass


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def data_digest(paths: list[str | Path]) -> dict[str, str]:
    """Per data folder (or file): a SHA-256 of every file's path relative to it and contents,
    so that a re-encoded or replaced image changes it and a moved copy does not. Folders named
    ``embedded:NAME`` are the bundled sets under data/."""
    out = {}
    for given in paths:
        path = Path(str(given).replace("embedded:orl", str(REPO / "data" / "orl_att_faces")))
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(path) if path.is_dir() else Path(f.name)
            digest.update(str(rel).encode("utf-8", "surrogateescape") + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        key = os.path.relpath(given, REPO) if Path(str(given)).is_absolute() else str(given)
        out[key] = f"sha256:{digest.hexdigest()[:16]} ({len(files)} files)"
    return out


def golden_digests() -> dict[str, str]:
    """Each golden file of the behaviour gate (tests/assets/golden/*.json) and its digest."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        for f in sorted(GOLDEN.glob("*.json"))
    }


def inputs_key(configs: tuple[str, ...], data: list[str | Path]) -> str:
    """A key for stored intermediate results (a study's runs): the behaviour of the code (the
    golden digests, not its bytes: a refactor keeps them), the configs and the data contents."""
    digest = hashlib.sha256(json.dumps(golden_digests(), sort_keys=True).encode())
    for config in configs:
        digest.update((REPO / config).read_bytes())
    digest.update(json.dumps(data_digest(data), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("dali", "nvidia.dali"), ("numpy", "numpy")):
        try:
            found[name] = __import__(module, fromlist=["__version__"]).__version__
        except ImportError:
            found[name] = None
    return found


def hardware() -> dict[str, str | int]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    found: dict[str, str | int] = {"cpu": cpu, "cpus": os.cpu_count() or 0}
    try:
        import torch

        if torch.cuda.is_available():
            found["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return found


def capture(command: str, data: list[str | Path] = (), allow_dirty: bool = False, **extra) -> dict:
    """The provenance of a result about to be made: refuses uncommitted changes to the code
    unless `allow_dirty` (then recorded as such). Call `finish` with it when the result is made."""
    # What the result is made of: the code, configs and data; not the pages results are spliced into.
    outputs = (":!results", ":!README.md", ":!docs")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs))
    if dirty and not allow_dirty:
        raise DirtyTree(
            "the working tree has uncommitted changes: commit them first, so that the result "
            "names the code that made it (or pass --allow-dirty, which records dirty: true)"
        )
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "dirty": dirty,
        "date": datetime.date.today().isoformat(),
        "command": command,
        "versions": versions(),
        "hardware": hardware(),
        "data": data_digest(list(data)),
        "golden": golden_digests(),
        "started": datetime.datetime.now().timestamp(),
        **extra,
    }


def finish(provenance: dict) -> dict:
    started = provenance.pop("started", None)
    if started is not None:
        provenance["wall_s"] = round(datetime.datetime.now().timestamp() - started, 1)
    return provenance


def publish(name: str, markdown: str, payload: dict, provenance: dict) -> Path:
    """Writes results/NAME/ (result.md, result.json, provenance.json) and splices README.md."""
    folder = RESULTS / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.md").write_text(markdown.rstrip("\n") + "\n")
    (folder / "result.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    (folder / "provenance.json").write_text(
        json.dumps(finish(provenance), indent=1, sort_keys=True) + "\n"
    )
    splice()
    return folder


def load(name: str) -> tuple[str, dict]:
    folder = RESULTS / name
    return (folder / "result.md").read_text(), json.loads((folder / "provenance.json").read_text())


def names() -> list[str]:
    return sorted(p.name for p in RESULTS.iterdir() if (p / "result.md").is_file())


def rendered(name: str, page: Path = README) -> str:
    """The README (or docs page) block of a result: one line of where it came from, then
    result.md."""
    markdown, prov = load(name)
    link = os.path.relpath(RESULTS / name, page.parent)
    made = f"commit {prov['commit'][:7]}" + (" (uncommitted changes)" if prov.get("dirty") else "")
    return (
        f"<!-- {name}: spliced from results/{name}/ by `make readme`; do not edit here -->\n"
        f"*From {made}, {prov['date']}, `{prov['command']}`; provenance in "
        f"[results/{name}/]({link}/provenance.json).*\n\n{markdown}"
    )


def block(text: str, name: str) -> str | None:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0]


def replace_block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"README.md has no {start.strip()} ... {end} block for results/{name}")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + start + content.rstrip("\n") + "\n" + end + after


def pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def splice() -> list[str]:
    """Every result into its blocks in README.md and docs/*.md."""
    done = []
    for page in pages():
        text = original = page.read_text()
        for name in names():
            if block(text, name) is not None:
                text = replace_block(text, name, rendered(name, page))
                done.append(name)
        if text != original:
            page.write_text(text)
    return done


BEHAVIOUR_FILES = ("plans.json", "metrics.json")
TRAINING = ("train_pretrain_torchvision.json", "train_pretrain_dali.json")
TRAINING += ("train_crossres_torchvision.json", "train_crossres_dali.json")
HEADS = "train_crossres_heads_torchvision.json"
# Trained and evaluated networks depend on all of the gate; studies whose variants include
# margin heads (and the pooled reading of such studies) on the heads' file too.
TRAINED = (*TRAINING, *BEHAVIOUR_FILES)
TRAINED_WITH_HEADS = (*TRAINING, HEADS, *BEHAVIOUR_FILES)


@dataclass(frozen=True)
class Published:
    """A published result (results/NAME/): how it is made again and what behaviour it shows."""

    # The make targets that make it again (`make results` runs every one), or, for a result
    # that needs what CI has not (a GPU), the procedure in words.
    make: str
    # The golden files whose change makes it stale: a trained or evaluated network's figure on
    # the gate's, a speed on none (the gate records numbers, not speed), the input pipeline's on
    # the plans it decodes.
    depends: tuple[str, ...]

    def targets(self) -> list[str]:
        return self.make.split()[1:] if self.make.startswith("make ") else []


# Every published result, in one table: the Makefile holds each target's recipe.
PUBLISHED: dict[str, Published] = {
    "demo": Published("make demo-readme", TRAINED),
    "demo-band": Published("make demo-band", TRAINED),
    "cross-cpu": Published("make cross-cpu", ("train_pretrain_torchvision.json",)),
    "arithmetic-cost": Published("make bench-arithmetic", ()),
    "study-orl": Published("make study-orl", TRAINED),
    "study-lfw": Published("make study-lfw", TRAINED),
    "study-orl-degradations": Published("make study-orl-degradations", TRAINED),
    "study-orl-heads": Published("make study-orl-heads", TRAINED_WITH_HEADS),
    "study-lfw-heads": Published("make study-lfw-heads", TRAINED_WITH_HEADS),
    "study-lfw-open": Published("make study-lfw-open", TRAINED_WITH_HEADS),
    "study-lfw-open-teacher1": Published("make study-lfw-open-teacher1", TRAINED_WITH_HEADS),
    "study-lfw-open-teacher2": Published("make study-lfw-open-teacher2", TRAINED_WITH_HEADS),
    "study-lfw-open-teacher3": Published("make study-lfw-open-teacher3", TRAINED_WITH_HEADS),
    "study-lfw-open-pooled": Published("make study-lfw-open-pooled", TRAINED_WITH_HEADS),
    "study-orl-feature-terms": Published("make study-orl-feature-terms", TRAINED),
    "study-lfw-dlib": Published("make study-lfw-dlib", TRAINED_WITH_HEADS),
    "teacher-alignment": Published("make teacher-alignment", BEHAVIOUR_FILES),
    "faces-screen": Published("make faces-screen", BEHAVIOUR_FILES),
    "bench-teacher-cache": Published("make bench-teacher-cache", ()),
    "study-lfw-dlib-faces": Published("make study-lfw-dlib-faces", TRAINED),
    "study-lfw-dlib-faces-sources": Published("make study-lfw-dlib-faces", TRAINED_WITH_HEADS),
    "faces-curve": Published("make faces-curve", TRAINED),
    "study-lfw-dlib-motion": Published("make study-lfw-dlib-motion", TRAINED),
    "demo-dlib": Published("make demo-dlib-readme", TRAINED),
    "bench-partial-fc": Published("make bench-partial-fc", ()),
    "bench-startup": Published("make bench-startup", ()),
    "benchmarks-fixture": Published("make benchmarks-readme", TRAINED),
    "bench-pipeline": Published("make bench-pipeline", ("plans.json",)),
    "bench-teacher": Published("make bench-teacher", ()),
    "bench-verification": Published("make bench-verification", ()),
    "backend-gap": Published("make demo-readme bench-backend-gap", (*TRAINING, "plans.json")),
    "test-timing": Published("make test-timing", ()),
    "gpu-h200": Published(
        "bench/gpu_check.sh on one H200 (its header says how), then bench/gpu_results.py", ()
    ),
}


def make_targets() -> list[str]:
    """Every make target of the table, once each, in its order (`make results`)."""
    return list(dict.fromkeys(t for entry in PUBLISHED.values() for t in entry.targets()))


def affected_by(golden_file: str) -> list[str]:
    """The published results that a change of `golden_file` makes stale."""
    return [n for n in names() if n not in PUBLISHED or golden_file in PUBLISHED[n].depends]


def stale() -> list[tuple[str, list[str], str]]:
    """(name, the golden files that moved since it was made, how to regenerate it) for every
    result made with other behaviour than today's."""
    current = golden_digests()
    out = []
    for name in names():
        _, prov = load(name)
        made = prov.get("golden") or {}
        entry = PUBLISHED.get(name, Published(prov["command"], tuple(current)))
        moved = [f for f in entry.depends if made.get(f) != current.get(f)]
        if moved:
            out.append((name, moved, entry.make))
    return out


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in `text` as rows of {column: cell} (result.json of a command that
    prints tables)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def run(name: str, command: list[str], data: list[str], allow_dirty: bool) -> Path:
    """Runs a benchmark command that prints markdown and publishes what it printed."""
    shown = " ".join(command).replace(sys.executable, "python")
    prov = capture(shown, data, allow_dirty)
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        # Nothing is published from a failed command; what it said is on stderr above.
        raise CommandFailed(f"{shown} exited with {done.returncode}; results/{name} is unchanged")
    return publish(name, done.stdout, {"tables": markdown_tables(done.stdout)}, prov)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s {splice,stale,list,targets} | run NAME [--data DIR ...] [--allow-dirty] "
        "-- CMD ...",
    )
    parser.add_argument("action", choices=["splice", "stale", "list", "targets", "run"])
    parser.add_argument("name", nargs="?", help="with run: the result's name")
    parser.add_argument("--data", nargs="*", default=[], help="with run: the data it reads")
    parser.add_argument("--allow-dirty", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.action == "run":
        if not args.name or not command:
            parser.error("run needs a NAME and -- COMMAND")
        try:
            print(f"wrote {run(args.name, command, args.data, args.allow_dirty)}")
        except (DirtyTree, CommandFailed) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elif args.action == "splice":
        print(f"spliced into the README and docs: {', '.join(splice()) or 'nothing'}")
    elif args.action == "targets":
        print(" ".join(make_targets()))
    elif args.action == "stale":
        for name, moved, how in stale():
            print(f"stale: results/{name} ({', '.join(moved)} moved since it was made): {how}")
    else:
        for name in names():
            _, prov = load(name)
            print(f"{name:28s} {prov['commit'][:7]} {prov['date']} {prov['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
