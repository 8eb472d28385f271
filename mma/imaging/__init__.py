"""Image handling: MATLAB-compatible resizing, colour conversion and file I/O.

Kept import-free so that `import mma.imaging.resize` does not pull in torch or PIL.
"""
