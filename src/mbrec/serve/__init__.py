"""Serving: top-k recommendations in the caller's ids, exports."""
