"""Adapters that plug MMA into tools people already use (spandrel, ...).

Each adapter lives in its own module and imports its tool there, so `import mma` never needs them; the
optional extras in pyproject.toml (e.g. `mma-sr[spandrel]`) install the tools.
"""
