"""The live API-server side of the control plane: connection, rate limits, list/watch."""
