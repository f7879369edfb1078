"""The admin's subcommands of `lando-ssh`, one module per concern; cli.py parses the command line and
dispatches here. Each `cmd_*` takes the config and argparse's namespace and returns an exit code."""
