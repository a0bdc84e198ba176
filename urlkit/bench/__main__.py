from urlkit.bench.cli import main

# The OpenMP wait policy is left as the user has it: spinning workers (the default) are
# fastest on an idle machine and thrash on a shared one; the "threads" section of the table
# measures both policies in fresh processes (docs/performance.md).
raise SystemExit(main())
