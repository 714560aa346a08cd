"""Puts a benchmark's block into docs/BENCHMARKS.md: between its markers when they are
there, else at the end under `heading`. Refuses (exit non-zero) when any call failed."""
import re
import sys


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
