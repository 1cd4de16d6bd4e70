"""The documentation is real: README.md and every docs/*.md page.

- Every ``python -m synbench`` / ``python -m synbench.compare`` / ``./scripts/run`` / ``./scripts/compare`` line in
  their bash blocks composes with Hydra as written (sweeps by their first value, launchers included); the commands
  that are not Hydra apps are run by other tests (named in the pages).
- The scripts, configs and tests the pages name exist.
- Every relative link and image points to an existing file, and every ``#anchor`` to a heading of its target
  (GitHub's slug rules).
- Every docs page starts with its title and a bash block of its commands, and the README links every page.
"""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from synbench.runner import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
APPS = {("python", "-m", "synbench"): "config", ("./scripts/run",): "config",
        ("python", "-m", "synbench.compare"): "compare", ("./scripts/compare",): "compare"}
# Screenshots another change adds; until then a missing one is not an error (only these three, only if missing).
PENDING_IMAGES: set[str] = set()  # images a page may link before they are made (none now)
SKIPPED_SCHEMES = ("http:", "https:", "mailto:")
FLAGS_WITH_A_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                      "--config-dir", "-cd"}  # Hydra's own: `--cfg job` is not an override


def pages() -> list[Path]:
    """README.md, then every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


def bash_commands(path: Path) -> list[str]:
    """The command lines of the page's bash blocks: backslash-newline joined, comments stripped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def readme_commands() -> list[str]:
    """Every command line of README.md and docs/*.md."""
    return [line for page in pages() for line in bash_commands(page)]


def first_of_each_sweep(args: list[str]) -> list[str]:
    """``a=1,2`` -> ``a=1``: one job of the sweep, composed as the launcher would compose it."""
    parser = OverridesParser.create()
    out = []
    for arg in args:
        override = parser.parse_override(arg)
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            out.append(f"{override.get_key_element()}={value}")
        else:
            out.append(arg)
    return out


def test_every_hydra_command_in_the_docs_composes():
    composed = []
    for line in readme_commands():
        argv = shlex.split(line)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # PYTHONPATH=. and the like
            argv = argv[1:]
        for prefix, config in APPS.items():
            if tuple(argv[:len(prefix)]) == prefix:
                args, rest = [], iter(argv[len(prefix):])
                for arg in rest:
                    if arg in FLAGS_WITH_A_VALUE:
                        next(rest, None)
                    elif not arg.startswith("-") or arg.startswith("~"):
                        args.append(arg)
                with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                    cfg = compose(config, overrides=first_of_each_sweep(args), return_hydra_config=True)
                assert cfg.hydra.launcher._target_, line
                composed.append(line)
                break
    # README.md and docs/ show that many; a parsing slip would drop them
    assert len(composed) >= 48, composed


def test_the_commands_the_readme_names_exist():
    text = "\n".join(page.read_text() for page in pages())
    for path in ("scripts/run", "scripts/test", "scripts/compare", "scripts/tracking_server", "scripts/bench_embed.py",
                 "scripts/bench_compare.py", "scripts/bench_slurm.py", "scripts/timm_conformance.py",
                 "conf/hydra/launcher/slurm.yaml",
                 "conf/experiment/paper_vit_family.yaml", "conf/compare.yaml", "scripts/prepare_mnist.py",
                 "scripts/train_family.py", "scripts/validity_mnist.py", "scripts/bench_downstream.py",
                 "conf/experiment/validity_mnist.yaml", "scripts/slurm_cluster"):
        assert path in text and (ROOT / path).is_file(), path


def test_every_path_the_docs_name_exists():
    """`scripts/...`, `tests/...`, `conf/...` and `synbench/....py` in backticks: files or folders that exist."""
    missing = []
    for page in pages():
        for path in re.findall(r"`((?:scripts|tests|conf)/[^`\s<]*|synbench/[^`\s<]*\.py)`", page.read_text()):
            found = list(ROOT.glob(path.rstrip("/"))) if "*" in path else [ROOT / path]
            if not found or not all(p.exists() for p in found):
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


# --- links and anchors ---------------------------------------------------------------------------------------------

def prose(text: str) -> str:
    """The text outside fenced code blocks and HTML comments, inline code spans blanked."""
    kept, fenced = [], False
    for line in re.sub(r"<!--.*?-->", "", text, flags=re.S).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "``", line))
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link syntax reduced to its text, lowercased, characters other than letters,
    digits, spaces, hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> list[str]:
    """The anchors of a markdown text's headings, in order; a repeated one gets -1, -2, ... as on GitHub."""
    out, seen, fenced = [], {}, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$", line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            out.append(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return out


def link_problems(page: Path, root: Path = ROOT, pending: set[str] = PENDING_IMAGES) -> list[str]:
    """Every relative link or image of the page that points nowhere: '<page>: (<target>): <what is wrong>'."""
    problems = []
    name = page.relative_to(root).as_posix()
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose(page.read_text())):
        if target.lower().startswith(SKIPPED_SCHEMES):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        try:
            rel = dest.relative_to(root.resolve()).as_posix()
        except ValueError:
            problems.append(f"{name}: ({target}): points outside the repository")
            continue
        if not dest.is_file():
            if rel not in pending:
                problems.append(f"{name}: ({target}): {rel} does not exist")
            continue
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{name}: ({target}): an anchor into {rel}, which is not markdown")
            elif anchor not in anchors(dest.read_text()):
                problems.append(f"{name}: ({target}): no heading of {rel} has the anchor #{anchor} "
                                f"(it has: {', '.join(anchors(dest.read_text()))})")
    return problems


def test_every_link_and_anchor_resolves():
    problems = [problem for page in pages() for problem in link_problems(page)]
    assert not problems, "\n".join(problems)


def test_the_slug_follows_github():
    assert slug("Do the scores predict? A validity study") == "do-the-scores-predict-a-validity-study"
    assert slug("RMQM and the spectrum baselines, beside SynBench") == "rmqm-and-the-spectrum-baselines-beside-synbench"
    assert slug("`model=` and the_key: 2.0") == "model-and-the_key-20"
    assert slug("A team server with PostgreSQL") == "a-team-server-with-postgresql"
    assert slug("See [the docs](docs/a.md)") == "see-the-docs"
    assert anchors("# T\n## Setup\n```bash\n# not a heading\n```\n## Setup\n### Setup ##\n") == [
        "t", "setup", "setup-1", "setup-2"]


def test_the_link_checker_finds_broken_links(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "there.png").write_bytes(b"")
    (tmp_path / "b.md").write_text("# B\n\n## Real heading\n")
    page = tmp_path / "a.md"
    page.write_text(
        "# A title\n\n"
        "[fine](b.md#real-heading) [fine](#a-title) ![fine](img/there.png) [web](https://example.org/x#y)\n"
        "[gone](nope.md) [bad anchor](b.md#nothing) ![no image](img/missing.png) [bad self](#nowhere)\n"
        "`[in code](ignored.md)`\n\n```bash\necho [in a block](ignored.md)\n```\n"
        "[anchor into a picture](img/there.png#x) ![pending](img/pending.png)\n")
    problems = link_problems(page, root=tmp_path, pending={"img/pending.png"})
    assert problems == [
        "a.md: (nope.md): nope.md does not exist",
        "a.md: (b.md#nothing): no heading of b.md has the anchor #nothing (it has: b, real-heading)",
        "a.md: (img/missing.png): img/missing.png does not exist",
        "a.md: (#nowhere): no heading of a.md has the anchor #nowhere (it has: a-title)",
        "a.md: (img/there.png#x): an anchor into img/there.png, which is not markdown",
    ]
    # the pending images are skipped only while missing, and only those
    assert link_problems(page, root=tmp_path, pending=set())[-1] == \
        "a.md: (img/pending.png): img/pending.png does not exist"


# --- the pages' shape ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_a_docs_page_starts_with_its_commands(page):
    """'# Title', at most one short paragraph, then a bash block of the page's commands."""
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# "), f"{page.name}: the first line is not a '# Title'"
    rest = "\n".join(lines[1:]).lstrip("\n")
    before, _, _ = rest.partition("```")
    assert rest.startswith(before + "```bash\n"), f"{page.name}: the first block after the title is not ```bash"
    assert "\n\n" not in before.strip() and not before.lstrip().startswith("#"), \
        f"{page.name}: more than one sentence between the title and the commands"
    assert bash_commands(page), f"{page.name}: the first bash block holds no command"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / target).resolve() for target in re.findall(r"\]\((docs/[^)#\s]+)", README.read_text())}
    unlinked = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not unlinked, unlinked
