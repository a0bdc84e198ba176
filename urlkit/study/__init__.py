"""Studies: the paper's probing experiments run on this machine (``python -m urlkit.study``).

plan.py    studies, profiles (conf/profile/), the runs of a study and their states; a
           computation is one run, shared by every experiment it is a grid point of
launch.py  one ``python -m urlkit.run`` child process per run, progress and ETA
lock.py    a run folder's train.lock: one study trains it at a time
cli.py     the command line: plan -> runs -> notebook -> findings
"""

from urlkit.study.cli import main
from urlkit.study.plan import STUDIES, Planned, Study, StudyError, estimate, plan, profile_names

__all__ = ["STUDIES", "Planned", "Study", "StudyError", "estimate", "main", "plan", "profile_names"]
