"""HTTP surfaces over the inference service: an app factory, thin routers, one error body per surface."""
