"""Temporary home of the queue command until it moves to ximgctx.cli."""
