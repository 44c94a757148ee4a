"""The four services: order, supplier, notify and metrics. They never import each other."""
