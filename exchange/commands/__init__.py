"""One module per command group; each is a thin parse -> call -> render with no logic.

Every module here exposes ``register(subparsers)``, which adds its sub-command(s) and sets
``handler`` on the parsed namespace: a callable taking the namespace and returning an exit
code. ``cli.main`` lists the modules in ``COMMAND_MODULES`` and nothing else knows about them.
"""
