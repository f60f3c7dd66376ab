"""The client SDK for integrations and the `ticketflow` command line."""
