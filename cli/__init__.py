"""The `mb` command: a thin click shell over the mbdata / mbtrain Python APIs."""
