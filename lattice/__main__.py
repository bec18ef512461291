"""``python -m lattice``: the ``lattice`` command."""

from lattice.app.cli import main

main()
