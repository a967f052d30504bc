"""Policy files (Department baseline + school layer) -> validated, compiled, immutable tables."""
