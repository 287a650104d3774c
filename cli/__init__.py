"""The ``freshrec`` command, above every part: it assembles their subcommands.

It sits on top of the layers (``freshrec`` < ``schemas`` < ``models`` <
``streams``, ``serving``) so that the shared floor, ``freshrec/``, imports none
of the parts; see docs/architecture.md.
"""
