"""The model runner: packs a scheduled step into padded arrays and runs the compiled step."""
