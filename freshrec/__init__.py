"""What every freshrec part shares: settings, errors, the retry policy, the CLI and the local stack."""

__version__ = "0.1.0"
