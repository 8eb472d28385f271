"""Pictures of results: the comparison figure (`mma compare`) and the evaluation report (`mma eval --report`).

Modules: `regions` (where to zoom), `figure` (the side-by-side figure), `compare` (one image through each
method), `crops` (the report's crops, kept while evaluating) and `html` (the self-contained report).
"""
