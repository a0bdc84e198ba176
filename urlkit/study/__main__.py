"""``python -m urlkit.study``: see urlkit/study/cli.py."""

from urlkit.study.cli import main

raise SystemExit(main())
