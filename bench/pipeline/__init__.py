"""End-to-end benchmarks of the daemon against the scripted stock pipeline (see __main__)."""
