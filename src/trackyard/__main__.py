"""`python -m trackyard`: the `trackyard` command (how `serve` starts its warehouse loader)."""

from trackyard.cli import main

main()
