"""Scheduling: the policy interface that scheduler plugins implement."""
