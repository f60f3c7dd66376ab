"""Run the benchmarks one after another, each in its own process: `python -m bench [--size small|full] [names]`.

.venv/bin/python -m bench                         # every benchmark, small sizes (about 8 minutes)
.venv/bin/python -m bench --size full             # the sizes of issue 8 (hours: see the README)
.venv/bin/python -m bench intake workers          # some of them
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT, console

ALL = ("categorise", "database", "intake", "workers", "scale")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("small", "full"), default="small")
    p.add_argument("names", nargs="*", choices=[[], *ALL], default=[], metavar="NAME", help=", ".join(ALL))
    args = p.parse_args()
    failed = []
    for name in args.names or ALL:
        console.rule(f"bench.{name} --size {args.size}")
        if subprocess.call([sys.executable, "-m", f"bench.{name}", "--size", args.size], cwd=ROOT) != 0:
            failed.append(name)
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()
