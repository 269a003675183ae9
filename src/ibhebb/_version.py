"""The version of ibhebb, defined here only (read by the build and by ``ibhebb.__version__``)."""
__version__ = "0.1.0"
