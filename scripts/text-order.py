#!/usr/bin/env python3
"""Writes link/hot-text.order (see build.rs) from callgrind profiles of the daemon.

usage: text-order.py LINK_MAP BINARY OUT CALLGRIND_OUT...

LINK_MAP is the lld -Map of BINARY, each CALLGRIND_OUT a profile taken with
--dump-instr=yes --compress-pos=no --compress-strings=no. Functions run by
the plain candidates (no --pod-name on their command line) come first, then
those only the replicas with the listeners and the Pod labeller on ran; each
group in address order.
"""

import bisect
import re
import sys


def text_sections(link_map):
    """(start, size, symbol) of every .text input section, sorted."""
    sections, in_text = [], False
    for line in open(link_map):
        parts = line.split()
        if len(parts) == 5 and parts[4].startswith("."):  # an output section
            in_text = parts[4] == ".text"
            continue
        # `.text.unlikely.f` (LLVM's split-off cold part of f) and the like
        # hold symbol `f` too.
        m = re.search(r":\(\.text\.(?:(?:unlikely|hot|startup|exit|split)\.)?(.+)\)$", line.rstrip())
        if in_text and m:
            sections.append((int(parts[0], 16), int(parts[2], 16), m.group(1)))
    return sorted(sections)


def profile(path, binary):
    """Command line and executed addresses of `binary` in one callgrind output."""
    cmd, addrs, ob = "", set(), None
    for line in open(path, errors="replace"):
        if line.startswith("cmd:"):
            cmd = line
        elif line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("0x") and ob == binary:
            addrs.add(int(line.split()[0], 16))
    return cmd, addrs


def main():
    link_map, binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    sections = text_sections(link_map)
    starts = [s[0] for s in sections]
    plain, full = set(), set()
    for path in profiles:
        cmd, addrs = profile(path, binary)
        hit = plain if "--pod-name" not in cmd else full
        for a in addrs:
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and a < sections[i][0] + sections[i][1]:
                hit.add(i)
    order = sorted(plain) + sorted(full - plain)
    with open(out, "w") as f:
        f.writelines(sections[i][2] + "\n" for i in order)
    size = lambda s: sum(sections[i][1] for i in s) // 1024
    print(
        f"{out}: {len(plain)} functions ({size(plain)} KiB) run by plain candidates, "
        f"{len(full - plain)} more ({size(full - plain)} KiB) with everything on, "
        f"of {len(sections)} ({size(range(len(sections)))} KiB)"
    )


main()
