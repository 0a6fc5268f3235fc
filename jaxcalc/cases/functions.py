"""Cases: functions (being written)."""
