"""The generic profile: the starting state, the update and the version are shell commands
given in the matrix, the checks are the user's pytest files. See profile.py."""
