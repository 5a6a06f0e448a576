"""The error a handler raises for the caller's mistakes, and the store's."""


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


class StoreError(Exception):
    """A call on a `store` bucket failed: the bucket is not granted to the
    plugin, a limit refused the write, the store is down or did not answer by
    the request's deadline. The message says which (for a limit, the setting
    that changes it). Uncaught, it is answered 500 plugin_error with its
    message.
    """

    def __init__(self, message: str, *, kind: str = "other", bucket: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        """Why: ``"access-denied"`` (the bucket is not granted),
        ``"no-such-store"``, or ``"other"`` (a limit, a store that is down,
        the deadline)."""
        self.bucket = bucket
        """The bucket the call was on."""

    @property
    def message(self) -> str:
        """What went wrong, in words."""
        return str(self)


class KvError(Exception):
    """The store's `error` as a backend raises it, before `store` words it as
    a `StoreError`: `kind` is the WIT case, `text` the words of ``other``."""

    def __init__(self, kind: str, text: str = "") -> None:
        super().__init__(text or kind)
        self.kind = kind
        self.text = text
