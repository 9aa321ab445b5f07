"""``lmfusion`` subcommands, one module each (see :mod:`recipes.cli`)."""
