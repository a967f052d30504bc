"""Department side: school inventory, Prometheus deployment helpers and the yearly compliance report."""
