"""`mma evaluate`: to be written."""
