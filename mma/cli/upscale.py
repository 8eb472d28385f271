"""`mma upscale`: to be written."""
