"""`mma models`: to be written."""
