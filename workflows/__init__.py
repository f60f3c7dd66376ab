"""Deterministic workflow code only: no I/O, clocks or randomness outside `workflow.*`."""

from workflows.ticket import TicketWorkflow

__all__ = ["TicketWorkflow"]
