"""Write the learner's copies of the notebooks: notebooks/learner/NN_x.ipynb, solutions replaced by stubs.

    python scripts/make_learner_notebooks.py           # (re)write them
    python scripts/make_learner_notebooks.py --check   # exit 1 if any is missing or out of date

First it adds or refreshes, in the solved notebooks (.ipynb and their jupytext .py), the collapsed "common mistakes"
box after each exercise's check cell (`rlhf_helpers.exercises.mistakes`); outputs are left as they are.

See `rlhf_helpers.exercises.learner` for the rules (nbgrader's ### BEGIN SOLUTION / ### END SOLUTION markers).
"""

import argparse
import sys
from pathlib import Path

from rlhf_helpers.exercises.learner import write_learner_notebooks, write_mistake_boxes

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a learner copy is stale")
    args = parser.parse_args()
    boxes = write_mistake_boxes(NOTEBOOKS, check=args.check)
    stale = write_learner_notebooks(NOTEBOOKS, check=args.check)
    if args.check and (stale or boxes):
        sys.exit(f"out of date: {', '.join(boxes + [f'learner/{name}' for name in stale])}; run "
                 "python scripts/make_learner_notebooks.py")
    print(("stale: " if args.check else "written: ") + (", ".join(boxes + [f"learner/{n}" for n in stale]) or "none"))
