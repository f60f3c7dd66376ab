"""Benchmarks of the ticket pipeline, run on demand (`make bench`), never by `make test`.

Every figure is measured side by side in one run on the same Temporal dev server, PostgreSQL and machine,
and reported as a ratio where a baseline exists (an empty workflow started the same way), because absolute
numbers on a shared machine drift. Each script prints a table and writes JSON under bench/results/.
"""
