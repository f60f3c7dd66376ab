"""Side effects of the ticket lifecycle: persistence, categorisation, routing, notifications."""

from activities.tickets import TicketActivities

__all__ = ["TicketActivities"]
