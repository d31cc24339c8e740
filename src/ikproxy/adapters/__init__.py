"""Framework adapters: each one only translates requests and responses for `ikproxy.proxy`."""
