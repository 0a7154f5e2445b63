"""Training recipes (Lightning).  Imported only by ``icm train``."""
