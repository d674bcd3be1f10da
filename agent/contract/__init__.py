"""The wire contract with the platform: sizes and limits, message shapes, sealing."""
