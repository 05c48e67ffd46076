"""Subcommand modules. Each module exposes ``COMMANDS``, a list of click commands/groups;
:mod:`cli.main` registers every module found here, so a capability adds its commands by adding
one file."""
