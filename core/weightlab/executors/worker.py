"""One step in a fresh process: ``python -m weightlab.executors.worker RUN_DIR [DEVICE]`` with
the step spec as JSON on stdin. Exit status 0: the result is written; 3: the step raised (its
error is in ``OUT.error.json``); anything else, or death by a signal: the worker was lost."""

from __future__ import annotations

import json
import sys

STEP_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from weightlab.executors.spec import StepFailed
    from weightlab.executors.step import run_step

    spec = json.loads(sys.stdin.read())
    try:
        run_step(spec, args[0], device=args[1] if len(args) > 1 else None)
    except StepFailed as e:
        print(e.error, file=sys.stderr)
        return STEP_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
