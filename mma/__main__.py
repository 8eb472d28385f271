"""`python -m mma` is the same as the `mma` command."""

from mma.cli import main

main()
