"""Optional adapters of bus_runtime to other libraries (each needs its extra installed)."""
