"""The error a handler raises for the caller's mistakes."""


class InvalidInput(Exception):
    """The request's inputs are wrong: a value is missing, malformed or out of
    range. The host answers 400 invalid_input with this message; retrying the
    same request will not help.

    Any other exception a handler raises is its own failure, answered 500
    plugin_error with the exception's message.
    """

    @property
    def message(self) -> str:
        """What was wrong, as the caller will read it."""
        return str(self)
