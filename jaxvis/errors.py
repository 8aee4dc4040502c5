"""The errors jaxvis raises at its edges.

Every error names the offending thing and, where there is a finite set of valid choices,
lists them. The CLI prints ``str(error)`` as one line and exits non-zero.
"""


class JaxvisError(Exception):
    """Base class: a problem with the user's input, reported as one clear line."""


class WeightFileError(JaxvisError):
    """A weight file cannot be read: truncated, corrupted, hostile or of the wrong kind."""


class ConversionError(JaxvisError):
    """Source tensors do not fit the model: a missing or unused key, or a wrong shape."""


class UnknownNameError(JaxvisError, KeyError):
    """An unknown model, layer, source or weight name."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def check_new_name(kind: str, name: str, table, must: str) -> None:
    """The two checks of every ``register_*`` call: ``name`` is an identifier (``must`` says what
    that means here, e.g. "a Python identifier (e.g. 'smooth')") and not taken in ``table``
    (names key compiled programs and results files, so a name always means one function)."""
    if not name.isidentifier():
        raise JaxvisError(f"{kind} name {name!r} must be {must}")
    if name in table:
        raise JaxvisError(f"{kind} {name!r} is already registered; choose another name")


def unknown(kind: str, name, valid, hint: str = "") -> UnknownNameError:
    """``UnknownNameError`` for ``name`` that lists the valid choices of ``kind``; ``hint`` (e.g.
    how to add a choice) follows in parentheses. Several names (a list) are named together."""
    names = ", ".join(map(str, name)) if isinstance(name, (list, tuple)) else repr(name)
    return UnknownNameError(f"unknown {kind} {names}; valid: {', '.join(map(str, valid))}"
                            + (f" ({hint})" if hint else ""))
