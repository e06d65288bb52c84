"""MobileNetV2's block table, shared by the PyTorch and Keras definitions (no framework here)."""

# (expansion t, output channels c, repeats n, first stride s), as in Table 2 of the paper.
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
