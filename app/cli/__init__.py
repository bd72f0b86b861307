"""The command line's commands, one module each (``app/__main__.py`` parses and dispatches).

``arguments`` holds the parser and the argument types every command shares;
``connections`` which database a command uses and how a failure to reach it reads.
"""
