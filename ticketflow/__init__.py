"""ticketflow's domain core: models, policy configuration and pure decision logic.

Pure and deterministic, so the workflow sandbox can pass it through and activities and
clients share it.
"""
