"""`python -m app`: the `caseapi` command, as the console script runs it."""

from app.cli import main

main()
