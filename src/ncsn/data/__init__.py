"""LightningDataModules. Every batch is ``(x, y)``: x in [0, 1] (C, H, W) for images, or 2-D
points; y the class label where the dataset has one, else -1 (score models ignore it)."""
