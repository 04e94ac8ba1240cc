"""The 'heavy' module of the good plugin; importing it is recorded so tests see laziness."""

IMPORTED = True


class FancyBackend:
    name = "fancy"
