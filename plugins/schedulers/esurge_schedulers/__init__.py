"""eSurge's first-party scheduling policies: ``fcfs`` and ``priority``."""
