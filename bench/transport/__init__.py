"""Transport benchmark: our SFTP client against stock OpenSSH sftp on one loopback hub.

Run ``.venv/bin/python -m bench.transport`` as root (it starts a hub with the test harness).
"""
