"""The one exception type users see: the CLI prints it and exits with status 2."""


class UserError(Exception):
    """Bad input from the user: a timeline field, a file, a command-line value.

    The message names what was wrong and the offending value; the CLI prints it without
    a traceback. Raised before any model loads or any output is written. `docs`: the manual's
    section that explains the field (manual.section), which the CLI names after the message.
    """

    def __init__(self, message: str = "", docs: str | None = None):
        super().__init__(message)
        self.docs = docs
