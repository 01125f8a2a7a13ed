"""The course's exercises: one check per function the learner writes, in course order.

In a notebook an exercise is a function with a stub (``raise NotImplementedError()``), the cell after it calls
its check, e.g. ``exercises.check_compute_gae(compute_gae)``, and the solution sits between nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers (``scripts/make_learner_notebooks.py`` removes it for the
learner's copy in ``notebooks/learner/``). Every check compares the learner's function with the package's own
on random and edge-case inputs and raises `ExerciseFailed` saying what is wrong.

``EXERCISES`` lists them all (notebook, difficulty, importance, minutes); ``tests/test_exercises.py`` proves that
every check rejects its stub and a plausible wrong implementation, and accepts the reference. ``mistakes.MISTAKES``
lists what each check recognises: the "common mistakes" box under every exercise is rendered from it.
"""

# one module per notebook, each listing its checks in __all__ (00 intro, 01 data, 02 generation, 03 reward, 04 trl,
# 05 ppo, 06 loop, 07 evaluation, 08 beyond); imported in course order so EXERCISES is in course order
from . import intro, data, generation, reward, trl, ppo, loop, evaluation, beyond  # noqa: E402
from .checking import EXERCISES, Exercise, ExerciseFailed
from .predictions import Prediction, predict
from .intro import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .generation import *  # noqa: F401,F403
from .reward import *  # noqa: F401,F403
from .trl import *  # noqa: F401,F403
from .ppo import *  # noqa: F401,F403
from .loop import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .beyond import *  # noqa: F401,F403

__all__ = ["EXERCISES", "Exercise", "ExerciseFailed", "Prediction", "predict",
           *intro.__all__, *data.__all__, *generation.__all__, *reward.__all__, *trl.__all__, *ppo.__all__, *loop.__all__,
           *evaluation.__all__, *beyond.__all__]
