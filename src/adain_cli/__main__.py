"""`python -m adain_cli` runs the same app as the `adain` command."""

from .cli import main

main()
