"""Reading and writing what users see: images (and later results and reports)."""
