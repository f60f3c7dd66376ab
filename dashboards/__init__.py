"""Grafana dashboards (generated JSON, checked in) and their publisher: built with the observability work."""
