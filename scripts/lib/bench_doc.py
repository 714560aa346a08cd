"""Puts a benchmark's block into docs/BENCHMARKS.md: between its markers when they are
there, else at the end under `heading`. Refuses (exit non-zero) when any call failed.
`machine()` names the machine a block was measured on."""
import os
import platform
import re
import sys


def machine():
    """`Machine: <cores> cores (<CPU model>), <OS> <kernel>.`"""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}."


def write_block(marker, heading, block, failed):
    print(block)
    if failed:
        sys.exit("some calls failed: the figures are not written to docs/BENCHMARKS.md")
    doc = "docs/BENCHMARKS.md"
    text = open(doc).read()
    pattern = re.compile(rf"<!-- {marker}:start -->.*?<!-- {marker}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    open(doc, "w").write(text)
