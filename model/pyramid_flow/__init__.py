"""PyramidFlow-miniFLUX checkpoints (github.com/jy0205/Pyramid-Flow) read into our layout."""
