"""The console's pages, one module per page; each has its own router under /console."""
