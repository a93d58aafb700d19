"""Device access shared by every product profile: a shell (SSH or local), HTTP, the browser."""
