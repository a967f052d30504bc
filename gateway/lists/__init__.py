"""Block/allow list formats and the compact suffix index they compile into."""
