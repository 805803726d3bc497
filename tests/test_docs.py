"""The repository stands alone: every fact the code relies on is in `docs/`, so no tracked file
may point at a document outside the repository (a design note, a notes folder, the vendor text
kept beside the clone, an absolute path on a developer's machine), and every link or section
reference into `docs/` must lead somewhere. A maintainer who clones only this repository must
find what a comment promises. Each rule is also run on known-bad text: a rule that cannot fail
proves nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Spelled in pieces so that this file, which is tracked too, does not trip its own rule.
_OUTSIDE = (
    ("../" + "shared", r"\.\./" + "shared"),
    ("DESIGN" + ".md", "DESIGN" + r"\.md"),
    ("notes folder", "notes/" + r"(windows|tealeaf|wsman)\.md"),
    ("vendor-text folder", r"\bse" + "ed/"),
    ("vendor-text reference", r"\bse" + r"ed (procedure|text)"),
    ("design repository", "steer" + "ing repo"),
    ("absolute /work path", r"(?<![\w.])/" + r"work/"),
)
OUTSIDE_RULES = tuple((label, re.compile(pattern)) for label, pattern in _OUTSIDE)

# `[text](target)`; inline code and fenced blocks are removed first.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# `docs/NAME.md "Section"` or `docs/NAME.md, "Section"`: the quote may wrap onto the next line
# of a docstring or a `#` comment.
SECTION_REF = re.compile(r'docs/([\w.-]+\.md),?\s+"([^"]+)"')
DOC_MENTION = re.compile(r"\bdocs/([\w.-]+\.md)")


def tracked_files() -> list[Path]:
    """The files git tracks; outside a git checkout, every file that is not hidden or built."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "build", "dist", "__pycache__"}
        return sorted(
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.parts)
        )
    return [ROOT / name for name in out.decode("utf-8").split("\0") if name]


def read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def outside_references(text: str) -> list[tuple[int, str, str]]:
    """(line, rule, line text) for each reference to a document outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for label, rule in OUTSIDE_RULES:
            if rule.search(line):
                found.append((number, label, line.strip()))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [h.replace("`", "").strip() for h in HEADING.findall(FENCE.sub("", read_text(path)))]


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(path):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(markdown: str) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto:
    ]


def broken_links(md: Path) -> list[str]:
    """Each relative link of one Markdown file whose file (or heading anchor) does not exist."""
    problems = []
    for target in relative_links(read_text(md)):
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def broken_section_refs(text: str) -> list[str]:
    """Each `docs/NAME.md "Section"` whose file or heading (a prefix of one is enough, so
    "Remote ops" names "Remote ops (scripts and their results)") does not exist."""
    problems = []
    for name in DOC_MENTION.findall(text):
        if not (DOCS / name).is_file():
            problems.append(f"docs/{name}: no such file")
    for name, section in SECTION_REF.findall(text):
        path = DOCS / name
        if not path.is_file():
            continue  # already reported above
        wanted = " ".join(re.sub(r"\n\s*(#\s*)?", " ", section).split())
        if not any(h == wanted or h.startswith(wanted + " ") for h in headings(path)):
            problems.append(f'docs/{name} "{wanted}": no such heading')
    return problems


MARKDOWN = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


def test_the_fact_pages_exist_and_architecture_links_them():
    text = read_text(DOCS / "architecture.md")
    for page in ("vendor-procedure.md", "windows.md", "lab.md"):
        assert (DOCS / page).is_file(), page
        assert f"]({page})" in text, f"docs/architecture.md does not link {page}"


def test_no_tracked_file_refers_to_a_document_outside_the_repository():
    files = tracked_files()
    assert any(p.name == "architecture.md" for p in files)  # the listing itself worked
    found = [
        f"{path.relative_to(ROOT)}:{line}: {label}: {text}"
        for path in files
        for line, label, text in outside_references(read_text(path))
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "# CI entry point: a clean clone with ../" + "shared beside it",
        "exit codes (DESIGN" + ".md)",
        "Wire facts: notes/" + "wsman.md",
        "Real names are unconfirmed (notes/" + "tealeaf.md)",
        "see ../se" + "ed/tealeaf.txt",
        "the vendor (se" + 'ed procedure, "Use a Signed Certificate")',
        "DESIGN (in the steering " + "repo's shared/)",
        "facts: /" + "work/shared/README",
    ],
)
def test_the_outside_reference_rules_catch_each_known_form(text):
    assert outside_references(text)


@pytest.mark.parametrize(
    "text",
    [
        "fleet lab up --dir /tmp/lab",
        "see docs/windows.md, the vendor procedure and its seeding order",
        "the homework/ folder and network/ paths",
    ],
)
def test_the_outside_reference_rules_leave_ordinary_text_alone(text):
    assert not outside_references(text)


@pytest.mark.parametrize("md", MARKDOWN, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading(md):
    assert not broken_links(md), "\n".join(broken_links(md))


def test_every_docs_reference_in_a_tracked_file_names_a_real_page_and_section():
    found = []
    for path in tracked_files():
        if path.suffix not in (".py", ".ps1", ".yaml", ".md", ".toml", "") or "data" in path.parts:
            continue
        if path == Path(__file__).resolve():
            continue  # its known-bad examples are deliberate
        found += [f"{path.relative_to(ROOT)}: {p}" for p in broken_section_refs(read_text(path))]
    assert not found, "\n".join(found)


def test_the_link_checks_fail_on_broken_targets(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## Some `code` section, and more\n", encoding="utf-8")
    md = tmp_path / "b.md"
    md.write_text(
        "[ok](a.md) [ok](a.md#some-code-section-and-more) [web](https://example.com/x) "
        "`[not a link](nowhere.md)` [bad](missing.md) [bad anchor](a.md#nope)\n",
        encoding="utf-8",
    )
    assert broken_links(md) == [
        "missing.md: no such file",
        "a.md#nope: no heading with anchor #nope in a.md",
    ]


def test_the_section_reference_check_fails_on_a_missing_page_or_heading():
    good = 'see docs/architecture.md "Exit codes" and docs/windows.md "The WS-Management\nwire"'
    assert broken_section_refs(good) == []
    assert broken_section_refs('docs/nowhere.md "Intro"') == ["docs/nowhere.md: no such file"]
    assert broken_section_refs('docs/architecture.md, "No such\n# section"') == [
        'docs/architecture.md "No such section": no such heading'
    ]
