"""The one exception for data that cannot be used."""


class DataError(ValueError):
    """A data file or download that cannot be used: missing, truncated, corrupt, of the wrong
    shape or content, or not obtainable.

    The message is one line that names the file (or URL), what was expected and what was found,
    so that the command line can print it as the reason for exit status 2.
    """
