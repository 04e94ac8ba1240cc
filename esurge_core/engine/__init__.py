"""The engine: request state, the step loop and the public ``eSurge`` API."""
