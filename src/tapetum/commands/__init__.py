"""Subcommands beyond `analyze` and `sql`: one module per command group, each defining a click
command or group that `tapetum.cli` registers with one line (`main.add_command(...)`)."""
