"""`mma doctor`: to be written."""
