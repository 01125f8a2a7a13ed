"""Write the learner's copies of the notebooks: notebooks/learner/NN_x.ipynb, solutions replaced by stubs.

    python scripts/make_learner_notebooks.py           # (re)write them
    python scripts/make_learner_notebooks.py --check   # exit 1 if any is missing or out of date

See `rlhf_helpers.exercises.learner` for the rules (nbgrader's ### BEGIN SOLUTION / ### END SOLUTION markers).
"""

import argparse
import sys
from pathlib import Path

from rlhf_helpers.exercises.learner import write_learner_notebooks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a learner copy is stale")
    args = parser.parse_args()
    stale = write_learner_notebooks(NOTEBOOKS, check=args.check)
    if args.check and stale:
        sys.exit(f"out of date in notebooks/learner/: {', '.join(stale)}; run python scripts/make_learner_notebooks.py")
    print(("stale: " if args.check else "written: ") + (", ".join(stale) or "none"))
