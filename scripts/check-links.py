#!/usr/bin/env python3
"""Checks that every relative link in the project's Markdown resolves.

    python3 scripts/check-links.py [FILE.md...]
    (default: README.md, docs/*.md, charts/election/README.md)

A link `[text](path)` or `[text](path#anchor)` must name a file or folder
that exists, relative to the file that links; an anchor (also `(#anchor)`
within the file) must be a heading of the target Markdown file, slugged as
GitHub does (lowercase, punctuation dropped, spaces to hyphens, `-N` for
repeats). Links with a scheme (https:, mailto:) are not fetched. Code spans
and fenced code blocks are skipped. Exits 1 listing every broken link.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def strip_code(text: str, spans: bool = True) -> str:
    """Blanks fenced code blocks and (with `spans`) inline code spans, keeping line numbers."""
    out, fenced = [], False
    for line in text.splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line) if spans else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in strip_code(path.read_text(), spans=False).splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    # Explicit anchors: <a name="x"></a> or id="x".
    out.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", path.read_text()))
    return out


def check(md: Path) -> list[str]:
    broken = []
    for lineno, line in enumerate(strip_code(md.read_text()).splitlines(), 1):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue  # https:, mailto: ...
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(ROOT)}:{lineno}: {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return broken


def main() -> int:
    files = [Path(a).resolve() for a in sys.argv[1:]] or [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "charts/election/README.md",
    ]
    broken = [b for f in files for b in check(f)]
    for b in broken:
        print(b)
    if broken:
        print(f"{len(broken)} broken relative link(s)")
        return 1
    print(f"relative links ok in {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
