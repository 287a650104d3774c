"""What every freshrec part shares: settings, errors, retry policy, CLI and local stack."""

__version__ = "0.1.0"
