"""Errors that a user can cause and fix, as opposed to bugs."""


class UserError(Exception):
    """A mistake in the user's config, data or command line.

    The message is one line that names the bad value, the file it came from and the fix.
    The command-line interface prints it without a traceback and exits with status 2.
    """
