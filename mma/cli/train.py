"""`mma train`: to be written."""
