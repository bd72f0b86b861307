"""The command line's commands, one module each (``app/__main__.py`` parses and dispatches).

Each command module's ``add_parser(sub)`` adds its subcommand and sets, on the parsed
arguments, ``run(settings, args) -> exit code`` and, where arguments must be refused
together before the environment is read, ``check(args)`` (raising ``UsageError``).
``arguments`` holds the parser and the argument types every command shares;
``connections`` which database a command uses and how a failure to reach it reads.
"""
