"""Running a stage's main function so that expected failures print one line, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ferbench.errors import FerbenchError

EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None], stage: str, description: str | None = None) -> None:
    """Call `main`; on a FerbenchError print `<stage>: error: ...` to stderr and exit 2.

    A stage without arguments passes its `description`: its command line is parsed first, so
    `--help` prints usage and exits 0, and a stray argument exits 2, before any work is done.
    """
    if description is not None:
        argparse.ArgumentParser(
            prog=f"python -m stages.{stage}",
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ).parse_args()
    try:
        main()
    except FerbenchError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr)
        sys.exit(130)


def backbone_argument(stage: str, description: str, where: str = "backbones") -> str:
    """Parse the one argument of a per-backbone stage: a name under `params.yaml: <where>`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=description)
    parser.add_argument("backbone", help=f"a backbone name under params.yaml: {where} (dvc.yaml passes it)")
    return parser.parse_args().backbone
