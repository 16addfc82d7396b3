"""A seeded demo stream and the scripted scenario that runs the loop end to end."""
