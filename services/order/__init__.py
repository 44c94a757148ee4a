"""Order service: the front door for storefront and marketplace orders."""
