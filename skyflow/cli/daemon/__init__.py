"""A resident skyflow: one loaded process per user, installation and home that runs `plan`, `validate`
and `dag` in a fork of itself, so that they answer without paying for imports.

    client.py    the `skyflow` entry point: hands a command to the daemon when one serves it
    address.py   where a daemon listens and how messages go (the standard library only)
    server.py    the daemon: loads what the commands need, then forks a process per command
    launch.py    starting one in the background (by `skyflow daemon start`, or after a command at a terminal)
    commands.py  `skyflow daemon start|stop|status`
"""
