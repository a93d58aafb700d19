"""Product profiles: everything that knows what the software under test is."""
